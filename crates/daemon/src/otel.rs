//! Span export over OTLP/HTTP (`--otlp-endpoint`): a [`Tracer`] that opens one
//! span per hop, continuing the caller's W3C `traceparent`, and hands back the
//! `traceparent` for the next hop so one request is one trace across
//! bismuthfe, bismuthd and the function.
//!
//! Without an endpoint nothing here runs: [`hop`] falls back to
//! [`trace::next_traceparent`], which costs one random span id per request.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::trace;

/// How long one export may take before it is abandoned (the batch is dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest collector response read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{0:?} is not an OTLP/HTTP endpoint: expected an http:// URL such as http://127.0.0.1:4318"
    )]
    Endpoint(String),
    #[error("OTLP exporter: {0}")]
    Build(String),
}

/// Opens spans and exports them in batches from a background thread.
#[derive(Clone)]
pub struct Tracer {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer").finish_non_exhaustive()
    }
}

impl Tracer {
    /// Exports spans of `service` (its `service.name`) to the collector at
    /// `endpoint`. Call from within a tokio runtime: exports run on it.
    pub fn new(service: &'static str, endpoint: &Endpoint) -> Result<Tracer, Error> {
        let url = endpoint.0.clone();
        let client = ExportClient {
            handle: tokio::runtime::Handle::current(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()
            .map_err(|e| Error::Build(e.to_string()))?;
        let resource = Resource::builder().with_service_name(service).build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(service);
        Ok(Tracer { tracer, provider })
    }

    /// Opens a span for one hop: a child of `incoming` when it is a valid
    /// `traceparent`, else the root of a new trace. Returns it with the
    /// `traceparent` to send on (this span as the parent).
    pub fn hop(
        &self,
        name: &'static str,
        kind: SpanKind,
        incoming: Option<&str>,
        attributes: Vec<KeyValue>,
    ) -> (Span, String) {
        let parent = incoming
            .and_then(remote_context)
            .map_or_else(Context::new, |sc| {
                Context::new().with_remote_span_context(sc)
            });
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let traceparent = {
            use opentelemetry::trace::Span as _;
            let sc = span.span_context();
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        };
        (Span(span), traceparent)
    }

    /// Records a finished piece of work as a root span after the fact
    /// (a container start, whose phases are measured as it goes).
    pub fn record(
        &self,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
    ) {
        use opentelemetry::trace::Span as _;
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attributes)
            .start(&self.tracer);
        span.end_with_timestamp(end);
    }

    /// Sends what is buffered and stops the export thread. The export runs
    /// on this runtime while a blocking thread waits for it.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "OTLP exporter did not shut down cleanly");
        }
    }
}

/// A span in progress; ends (and is queued for export) when dropped.
pub struct Span(opentelemetry_sdk::trace::Span);

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span").finish_non_exhaustive()
    }
}

impl Span {
    pub fn set(&mut self, attribute: KeyValue) {
        use opentelemetry::trace::Span as _;
        self.0.set_attribute(attribute);
    }

    /// Records the HTTP status answered; 5xx marks the span as an error.
    pub fn status(&mut self, code: u16) {
        use opentelemetry::trace::Span as _;
        self.0
            .set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
        if code >= 500 {
            self.0.set_status(Status::Error {
                description: Cow::Borrowed(""),
            });
        }
    }
}

/// One hop: a span when `tracer` is set, and the `traceparent` to send on.
/// Without a tracer, only the `traceparent` (a new span id in the caller's
/// trace, or a new trace).
pub fn hop(
    tracer: Option<&Tracer>,
    name: &'static str,
    incoming: Option<&str>,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> (Option<Span>, String) {
    match tracer {
        Some(t) => {
            let (span, tp) = t.hop(name, SpanKind::Server, incoming, attributes());
            (Some(span), tp)
        }
        None => (None, trace::next_traceparent(incoming)),
    }
}

/// The remote parent a valid `traceparent` names.
fn remote_context(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace::trace_id(traceparent).is_empty() {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(parent).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Where spans are posted: `--otlp-endpoint`, a collector's base URL
/// (`http://host:4318`, spans go to `/v1/traces`) or its full traces URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint(String);

impl std::str::FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        traces_url(s).map(Endpoint)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The URL spans are posted to: `/v1/traces` under a base URL.
fn traces_url(endpoint: &str) -> Result<String, Error> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| Error::Endpoint(endpoint.to_owned()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(Error::Endpoint(endpoint.to_owned()));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(match uri.path() {
        "" | "/" => format!("{base}/v1/traces"),
        _ => base.to_owned(),
    })
}

/// The exporter's HTTP client: hyper on the daemon's runtime. The SDK calls it
/// from its own thread, so each request is spawned onto the runtime.
struct ExportClient {
    handle: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportClient").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let request = request.map(Full::new);
        let call = async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(Response::from_parts(parts, body))
        };
        let task = self
            .handle
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, call).await });
        match task.await? {
            Ok(result) => result,
            Err(_) => Err("OTLP export timed out".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/custom/traces").unwrap(),
            "http://c:4318/custom/traces"
        );
        for bad in ["", "c:4318", "https://c:4318", "ftp://c", "http://"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_valid_traceparent_is_the_remote_parent() {
        let sc = remote_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(remote_context(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_hop_continues_the_trace_with_its_own_span() {
        let tracer = Tracer::new("test", &"http://127.0.0.1:9".parse().unwrap()).unwrap();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (_span, next) = tracer.hop("invoke", SpanKind::Server, Some(incoming), vec![]);
        assert!(
            next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{next}"
        );
        assert!(
            !next.contains("00f067aa0ba902b7") && next.ends_with("-01"),
            "{next}"
        );
        let (_span, root) = tracer.hop("invoke", SpanKind::Server, None, vec![]);
        assert!(!trace::trace_id(&root).is_empty(), "{root}");
        assert!(!root.starts_with("00-4bf92f"), "{root}");
        tracer.shutdown().await;
    }
}
