//! The HTTP body of an ADS response stream: framed messages from the stream
//! task, then gRPC trailers.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

/// What the stream task sends to the body.
#[derive(Debug)]
pub enum Out {
    /// One gRPC message, as chunks to write in order.
    Message(Vec<Bytes>),
    /// End the stream with this status.
    End(tonic::Status),
}

#[derive(Debug)]
pub struct AdsBody {
    rx: mpsc::Receiver<Out>,
    chunks: VecDeque<Bytes>,
    done: bool,
}

impl AdsBody {
    pub fn new(rx: mpsc::Receiver<Out>) -> Self {
        AdsBody {
            rx,
            chunks: VecDeque::new(),
            done: false,
        }
    }

    fn trailers(status: &tonic::Status) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        if status.add_header(&mut map).is_err() {
            map.insert("grpc-status", http::HeaderValue::from_static("13"));
        }
        Frame::trailers(map)
    }
}

impl http_body::Body for AdsBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Out::Message(chunks))) => {
                self.chunks.extend(chunks);
                match self.chunks.pop_front() {
                    Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                    None => Poll::Pending,
                }
            }
            Poll::Ready(Some(Out::End(status))) => {
                self.done = true;
                Poll::Ready(Some(Ok(Self::trailers(&status))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Ok(Self::trailers(&tonic::Status::ok("")))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.chunks.is_empty()
    }
}
