//! Decoding of the requests on an ADS stream, holding no buffer between
//! messages.
//!
//! tonic's `Streaming` keeps each stream's receive buffer at the size of the
//! largest request it ever decoded; a SotW ACK repeats every EDS name the
//! proxy subscribes to (tens of KiB for a thousand clusters), so thousands of
//! streams would each keep that much. Here a message is decoded straight from
//! the DATA chunk that holds it when it can be, and a message split across
//! chunks is gathered in a buffer dropped as soon as it is decoded.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http_body_util::BodyExt;
use prost::Message;

/// gRPC frame header: compressed flag and big-endian length.
const HEADER: usize = 5;

struct State<B> {
    body: B,
    /// Bytes received and not yet decoded (usually empty between messages).
    pending: Bytes,
    /// Gathers a message that spans DATA chunks.
    gather: Option<BytesMut>,
    done: bool,
    max: usize,
}

/// A request message read from one whole gRPC message's bytes.
pub trait WireDecode: Sized {
    fn from_wire(bytes: Bytes) -> Result<Self, String>;
}

impl<M: Message + Default> WireDecode for M {
    fn from_wire(bytes: Bytes) -> Result<Self, String> {
        M::decode(bytes).map_err(|e| e.to_string())
    }
}

/// The messages of a gRPC request body, one by one; ends at end of stream or
/// after the first error.
pub fn decode<M, B>(body: B, max: usize) -> BoxStream<'static, Result<M, tonic::Status>>
where
    M: WireDecode + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let state = State {
        body,
        pending: Bytes::new(),
        gather: None,
        done: false,
        max,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let result = next::<M, B>(&mut st).await;
        match result {
            Ok(Some(m)) => Some((Ok(m), st)),
            Ok(None) => None,
            Err(status) => {
                st.done = true;
                Some((Err(status), st))
            }
        }
    })
    .boxed()
}

async fn next<M, B>(st: &mut State<B>) -> Result<Option<M>, tonic::Status>
where
    M: WireDecode,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    loop {
        if let Some(m) = take_message::<M>(st)? {
            return Ok(Some(m));
        }
        match st.body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    append(st, data);
                }
            }
            Some(Err(e)) => return Err(tonic::Status::unknown(e.to_string())),
            None => {
                let left = st.pending.len() + st.gather.as_ref().map_or(0, |g| g.len());
                return if left == 0 {
                    Ok(None)
                } else {
                    Err(tonic::Status::internal(
                        "request stream ended inside a message",
                    ))
                };
            }
        }
    }
}

fn append<B>(st: &mut State<B>, data: Bytes) {
    if st.pending.is_empty() && st.gather.is_none() {
        st.pending = data;
    } else {
        let g = st.gather.get_or_insert_with(|| {
            let mut g = BytesMut::with_capacity(st.pending.len() + data.len());
            g.extend_from_slice(&st.pending);
            g
        });
        st.pending = Bytes::new();
        g.extend_from_slice(&data);
    }
}

/// Decodes one message if a whole one has arrived.
fn take_message<M: WireDecode>(st: &mut State<impl Sized>) -> Result<Option<M>, tonic::Status> {
    // Gathered bytes become the pending bytes once a whole message is there.
    let available: &[u8] = match &st.gather {
        Some(g) => g,
        None => &st.pending,
    };
    if available.len() < HEADER {
        return Ok(None);
    }
    if available[0] != 0 {
        return Err(tonic::Status::unimplemented(
            "compressed requests are not accepted",
        ));
    }
    let len = u32::from_be_bytes([available[1], available[2], available[3], available[4]]) as usize;
    if len > st.max {
        return Err(tonic::Status::resource_exhausted(format!(
            "request of {len} bytes is over the {} byte limit",
            st.max
        )));
    }
    if available.len() < HEADER + len {
        return Ok(None);
    }
    if let Some(g) = st.gather.take() {
        st.pending = g.freeze();
    }
    st.pending.advance(HEADER);
    let msg = st.pending.split_to(len);
    if st.pending.is_empty() {
        // Let go of the chunk (or gathered buffer) the message came in.
        st.pending = Bytes::new();
    }
    M::from_wire(msg)
        .map(Some)
        .map_err(|e| tonic::Status::internal(format!("undecodable request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use http_body_util::StreamBody;

    fn framed(m: &DiscoveryRequest) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn req(names: usize, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: "t".into(),
            response_nonce: nonce.into(),
            resource_names: (0..names)
                .map(|i| format!("outbound|9080||svc-{i}.ns.svc.cluster.local"))
                .collect(),
            ..Default::default()
        }
    }

    async fn decode_chunks(
        chunks: Vec<Vec<u8>>,
        max: usize,
    ) -> Vec<Result<DiscoveryRequest, tonic::Status>> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(c))));
        let body = StreamBody::new(futures_util::stream::iter(frames));
        decode::<DiscoveryRequest, _>(body, max).collect().await
    }

    #[tokio::test]
    async fn messages_split_and_joined_across_chunks_decode_in_order() {
        let (a, b, c) = (req(3, "1"), req(500, "2"), req(0, "3"));
        let mut all = framed(&a);
        all.extend(framed(&b));
        all.extend(framed(&c));
        // Every way of cutting the bytes into two or three chunks.
        for cut in [1, 4, 5, 17, all.len() / 2, all.len() - 1] {
            let chunks = vec![all[..cut].to_vec(), all[cut..].to_vec()];
            let got: Vec<_> = decode_chunks(chunks, 1 << 20)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(got, [a.clone(), b.clone(), c.clone()], "cut at {cut}");
        }
        let bytes: Vec<Vec<u8>> = all.iter().map(|b| vec![*b]).collect();
        let got: Vec<_> = decode_chunks(bytes, 1 << 20)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn oversized_compressed_and_truncated_requests_are_errors() {
        let big = framed(&req(100, "1"));
        let got = decode_chunks(vec![big.clone()], 100).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].as_ref().unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );

        let mut compressed = big.clone();
        compressed[0] = 1;
        let got = decode_chunks(vec![compressed], 1 << 20).await;
        assert_eq!(
            got[0].as_ref().unwrap_err().code(),
            tonic::Code::Unimplemented
        );

        let got = decode_chunks(vec![big[..big.len() - 3].to_vec()], 1 << 20).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }
}
