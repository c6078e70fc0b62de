//! pilotfish: an Istio-compatible service-mesh control plane for stock Envoy.
//!
//! Data flows one way (see README.md):
//! `config` (Galley) -> `model` snapshot -> `xds::translate` (pure) ->
//! `xds::cache` (encoded once, shared) -> `xds::server` (ADS streams) -> Envoy;
//! Envoy's access logs -> `telemetry` (Mixer) -> Istio's metrics on `/metrics`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod ca;
pub mod cli;
pub mod config;
pub mod kube;
pub mod loadgen;
pub mod metrics;
pub mod model;
pub mod telemetry;
pub mod xds;
