use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::*;

/// Our CRDs as JSON, by name (`virtualservices.networking.istio.io`).
fn mk_crds() -> BTreeMap<String, Json> {
    crds()
        .expect("CRDs merge")
        .iter()
        .map(|crd| {
            let json = serde_json::to_value(crd).expect("CRD to JSON");
            (
                json["metadata"]["name"].as_str().unwrap_or("?").to_string(),
                json,
            )
        })
        .collect()
}

fn versions(crd: &Json) -> &[Json] {
    crd["spec"]["versions"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

// --- Versions and kinds ----------------------------------------------------

#[test]
fn every_version_of_a_crd_is_the_same_but_for_its_name() {
    for (name, crd) in mk_crds() {
        let versions = versions(&crd);
        let storage: Vec<&str> = versions
            .iter()
            .filter(|v| v["storage"] == true)
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(storage, [STORAGE_VERSION], "{name}: storage versions");
        let without_name = |v: &Json| {
            let mut v = v.clone();
            if let Some(map) = v.as_object_mut() {
                map.remove("name");
                map.remove("storage");
            }
            v
        };
        for v in versions {
            assert_eq!(
                without_name(v),
                without_name(&versions[0]),
                "{name}: version {} differs from {}",
                v["name"],
                versions[0]["name"]
            );
        }
    }
}

/// The CRDs describe the kinds, groups and versions the config parser accepts.
#[test]
fn crds_agree_with_model_kinds() {
    let crds = mk_crds();
    for kind in crate::model::Kind::ALL {
        let crd = crds
            .values()
            .find(|crd| crd["spec"]["names"]["kind"] == kind.name())
            .unwrap_or_else(|| panic!("no CRD for {kind}"));
        assert_eq!(crd["spec"]["group"], kind.group(), "{kind}");
        let mut served: Vec<&str> = versions(crd)
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        let mut accepted = kind.versions().to_vec();
        served.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(served, accepted, "{kind}: served versions");
    }
    assert_eq!(crds.len(), crate::model::Kind::ALL.len());
}
