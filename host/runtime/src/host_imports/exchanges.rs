//! Recording a call's HTTP exchanges (`record_exchanges` in a plugin's
//! settings), for `settle plugin replay`: method, URL, status and both
//! bodies, copied as they stream past, bounded.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use settle_types::executor::{Exchange, MAX_EXCHANGE_BODY_BYTES, MAX_EXCHANGES};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi_http::WasiBody;

/// The most characters of a URL recorded.
const MAX_URL_CHARS: usize = 2048;
/// The most bytes one call's recorded exchanges take as JSON (one event).
const MAX_RECORDED_BYTES: usize = 160 * 1024;

/// A body's bytes as they pass, at most [`MAX_EXCHANGE_BODY_BYTES`].
#[derive(Default)]
pub(crate) struct Kept {
    bytes: Vec<u8>,
    cut: bool,
    /// The body was read to its end (else what is kept is only its start).
    ended: bool,
}

impl Kept {
    fn push(&mut self, data: &[u8]) {
        let room = MAX_EXCHANGE_BODY_BYTES.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.cut = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// One exchange in progress: its bodies fill as they stream.
pub(crate) struct Recording {
    method: String,
    url: String,
    status: Mutex<Option<u16>>,
    request: Arc<Mutex<Kept>>,
    response: Arc<Mutex<Kept>>,
}

/// The exchanges of one call, at most [`MAX_EXCHANGES`].
#[derive(Default, Clone)]
pub(crate) struct Recorder(Arc<Mutex<Vec<Arc<Recording>>>>);

impl Recorder {
    /// Starts recording a request; `None` past the cap.
    pub(crate) fn start(&self, method: &str, url: &str) -> Option<Arc<Recording>> {
        let mut all = lock(&self.0);
        if all.len() >= MAX_EXCHANGES {
            return None;
        }
        let recording = Arc::new(Recording {
            method: method.to_string(),
            url: url.chars().take(MAX_URL_CHARS).collect(),
            status: Mutex::new(None),
            request: Arc::default(),
            response: Arc::default(),
        });
        all.push(recording.clone());
        Some(recording)
    }

    /// What was recorded, as it stands when the call ends; at most
    /// [`MAX_RECORDED_BYTES`] as JSON (the longest bodies are cut first:
    /// escaping can make a body's JSON several times its bytes).
    pub(crate) fn take(&self) -> Vec<Exchange> {
        let mut all = self.take_all();
        let json_len = |all: &Vec<Exchange>| serde_json::to_string(all).map_or(0, |t| t.len());
        while json_len(&all) > MAX_RECORDED_BYTES {
            let longest = all
                .iter()
                .enumerate()
                .flat_map(|(i, x)| {
                    [
                        (i, false, x.request_body.len()),
                        (i, true, x.response_body.len()),
                    ]
                })
                .max_by_key(|(_, _, len)| *len)
                .filter(|(_, _, len)| *len > 0);
            let Some((i, response, len)) = longest else {
                break;
            };
            let x = &mut all[i];
            let body = if response {
                &mut x.response_body
            } else {
                &mut x.request_body
            };
            let mut keep = len / 2;
            while !body.is_char_boundary(keep) {
                keep -= 1;
            }
            body.truncate(keep);
            x.truncated = true;
        }
        all
    }

    fn take_all(&self) -> Vec<Exchange> {
        std::mem::take(&mut *lock(&self.0))
            .into_iter()
            .map(|r| {
                let request = lock(&r.request);
                let response = lock(&r.response);
                let status = *lock(&r.status);
                Exchange {
                    method: r.method.clone(),
                    url: r.url.clone(),
                    status,
                    request_body: String::from_utf8_lossy(&request.bytes).into_owned(),
                    response_body: String::from_utf8_lossy(&response.bytes).into_owned(),
                    // Cut at the cap, or not read to its end by the plugin.
                    truncated: request.cut || response.cut || (status.is_some() && !response.ended),
                }
            })
            .collect()
    }
}

impl Recording {
    pub(crate) fn answered(&self, status: u16) {
        *lock(&self.status) = Some(status);
    }

    /// The request's body, copied as it goes out.
    pub(crate) fn tee_request(&self, body: WasiBody) -> WasiBody {
        use http_body_util::BodyExt;
        Tee {
            inner: body,
            kept: self.request.clone(),
        }
        .boxed_unsync()
    }

    /// The response's body, copied as the plugin reads it.
    pub(crate) fn tee_response(&self, body: WasiBody) -> WasiBody {
        use http_body_util::BodyExt;
        Tee {
            inner: body,
            kept: self.response.clone(),
        }
        .boxed_unsync()
    }
}

/// A body that copies its data frames into `kept` as they pass.
struct Tee {
    inner: WasiBody,
    kept: Arc<Mutex<Kept>>,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    lock(&self.kept).push(data);
                }
            }
            Poll::Ready(None) => lock(&self.kept).ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            lock(&self.kept).ended = true;
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies of control characters escape to six bytes each in JSON: the
    /// record is still bounded, and says it was cut.
    #[test]
    fn a_call_s_record_is_bounded_as_json() {
        let recorder = Recorder::default();
        for i in 0..MAX_EXCHANGES + 2 {
            let r = recorder
                .start(
                    "POST",
                    &format!("http://h.test/{}", "\u{1}".repeat(5000 + i)),
                )
                .map(|r| {
                    lock(&r.request).push(&[1u8; MAX_EXCHANGE_BODY_BYTES]);
                    lock(&r.response).push(&[1u8; MAX_EXCHANGE_BODY_BYTES]);
                    lock(&r.response).ended = true;
                    r.answered(200);
                });
            assert_eq!(r.is_some(), i < MAX_EXCHANGES);
        }
        let taken = recorder.take();
        assert_eq!(taken.len(), MAX_EXCHANGES);
        let size = serde_json::to_string(&taken).unwrap().len();
        assert!(size <= MAX_RECORDED_BYTES, "{size}");
        assert!(taken.iter().all(|x| x.truncated));
        assert!(taken.iter().all(|x| x.url.chars().count() <= MAX_URL_CHARS));
    }
}
