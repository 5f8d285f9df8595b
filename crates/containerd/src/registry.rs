//! Pulling from OCI distribution registries: manifest resolution (indexes
//! narrowed to this platform), anonymous, basic and bearer-token auth,
//! redirects to blob storage, and blobs streamed straight into containerd.
//! HTTPS always, except for registries named as insecure (loopback tests).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bismuth_model::image_ref::ImageRef;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, BodyStream, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::oci::{self, Descriptor, Index, Manifest};
use crate::{Containerd, CtdError};

/// User name and password for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

/// Which registries may be reached over plain HTTP and the credentials to use.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// `host[:port]` of registries spoken to over plain HTTP.
    pub insecure: HashSet<String>,
    /// Credentials by `host[:port]`.
    pub auth: HashMap<String, RegistryAuth>,
}

impl RegistryConfig {
    /// Reads credentials from a Docker-style `config.json` (`{"auths": {host: {"auth": base64("user:pass")}}}`).
    pub fn load_auth_file(&mut self, json: &[u8]) -> Result<(), String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            auths: HashMap<String, Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            auth: Option<String>,
            #[serde(default)]
            username: Option<String>,
            #[serde(default)]
            password: Option<String>,
        }
        let file: File = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        for (host, entry) in file.auths {
            let host = host
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            let auth = match (entry.auth, entry.username, entry.password) {
                (Some(b64), _, _) => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .map_err(|e| format!("{host}: auth is not base64: {e}"))?;
                    let raw = String::from_utf8(raw).map_err(|e| format!("{host}: {e}"))?;
                    let (u, p) = raw
                        .split_once(':')
                        .ok_or_else(|| format!("{host}: auth is not user:password"))?;
                    RegistryAuth {
                        username: u.into(),
                        password: p.into(),
                    }
                }
                (None, Some(username), Some(password)) => RegistryAuth { username, password },
                _ => return Err(format!("{host}: no credentials")),
            };
            self.auth.insert(host, auth);
        }
        Ok(())
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Pulls images into containerd. One per daemon; concurrent pulls of the
/// same image wait for the first.
#[derive(Clone, Debug)]
pub struct Puller {
    client: HttpClient,
    config: Arc<RegistryConfig>,
    in_flight: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
}

/// How many blobs of one image are fetched at once.
const PARALLEL_BLOBS: usize = 3;

impl Puller {
    pub fn new(config: RegistryConfig) -> Result<Self, CtdError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| CtdError::io("loading the system's CA certificates", e))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Puller {
            client,
            config: Arc::new(config),
            in_flight: Arc::default(),
        })
    }

    /// Makes sure containerd has `image` (pulling it if not) and that it is
    /// unpacked; returns it ready to run.
    pub async fn ensure(
        &self,
        ctd: &Containerd,
        image: &str,
    ) -> Result<crate::ResolvedImage, CtdError> {
        let reference = ImageRef::parse(image).map_err(|e| CtdError::BadImage {
            image: image.to_owned(),
            reason: e.to_string(),
        })?;
        let name = reference.canonical();
        // The name exactly as given first (an image imported as
        // `local/busybox:latest` is stored under that name), then its
        // normalized form (`docker.io/local/busybox:latest`); only then a pull.
        if image != name {
            if let Ok(Some(r)) = ctd.resolve_image(image).await {
                if r.chain_id.is_empty() || ctd.snapshot_exists(&r.chain_id).await? {
                    return Ok(r);
                }
                return ctd
                    .leased(|ctd| async move {
                        ctd.unpack(&r).await?;
                        Ok(r)
                    })
                    .await;
            }
        }
        let lock = {
            let mut map = self.in_flight.lock().await;
            map.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        ctd.leased(|ctd| async move { self.ensure_leased(&ctd, &reference, &name).await })
            .await
    }

    async fn ensure_leased(
        &self,
        ctd: &Containerd,
        reference: &ImageRef,
        name: &str,
    ) -> Result<crate::ResolvedImage, CtdError> {
        let resolved = match ctd.resolve_image(name).await {
            Ok(Some(resolved)) => resolved,
            Ok(None) | Err(CtdError::Rpc { .. }) => {
                self.pull(ctd, reference).await?;
                ctd.resolve_image(name)
                    .await?
                    .ok_or_else(|| CtdError::ImageNotFound(name.to_owned()))?
            }
            Err(e) => return Err(e),
        };
        if !resolved.chain_id.is_empty() && !ctd.snapshot_exists(&resolved.chain_id).await? {
            ctd.unpack(&resolved).await?;
        }
        Ok(resolved)
    }

    /// Pulls `image` into containerd's content store and records it.
    pub async fn pull(&self, ctd: &Containerd, image: &ImageRef) -> Result<(), CtdError> {
        let name = image.canonical();
        let fail = |reason: String| CtdError::Pull {
            image: name.clone(),
            reason,
        };
        let session = Session::new(self, image);
        let reference = image
            .digest
            .clone()
            .or_else(|| image.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let started = std::time::Instant::now();

        let (top, top_bytes) = session.manifest(&reference).await.map_err(fail)?;
        if let Some(pinned) = &image.digest {
            if &top.digest != pinned {
                return Err(fail(format!("registry sent {} for {pinned}", top.digest)));
            }
        }
        let (manifest_desc, manifest_bytes) = if oci::is_index(&top.media_type) {
            let index: Index =
                serde_json::from_slice(&top_bytes).map_err(|e| fail(format!("index: {e}")))?;
            let pick = oci::pick_manifest(&index)
                .ok_or_else(|| fail("no manifest for this platform".into()))?
                .clone();
            let (desc, bytes) = session.manifest(&pick.digest).await.map_err(fail)?;
            if desc.digest != pick.digest {
                return Err(fail(format!(
                    "manifest {} does not match its digest",
                    pick.digest
                )));
            }
            (desc, bytes)
        } else {
            (top.clone(), top_bytes.clone())
        };
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| fail(format!("manifest: {e}")))?;

        // Config and layers, a few at a time, each verified by containerd.
        let blobs: Vec<Descriptor> = std::iter::once(manifest.config.clone())
            .chain(manifest.layers.iter().cloned())
            .collect();
        futures_util::stream::iter(blobs)
            .map(|blob| {
                let session = &session;
                async move {
                    if !oci::valid_digest(&blob.digest) {
                        return Err(fail(format!("unsupported digest {:?}", blob.digest)));
                    }
                    if ctd.content_exists(&blob.digest).await? {
                        return Ok(());
                    }
                    let body = session.blob(&blob.digest).await.map_err(fail)?;
                    ctd.write_content(&blob.digest, blob.size, body).await
                }
            })
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect::<Vec<()>>()
            .await?;

        ctd.write_small(&manifest_desc.digest, manifest_bytes)
            .await?;
        ctd.label_children(&name, &manifest_desc).await?;
        if top.digest != manifest_desc.digest {
            ctd.write_small(&top.digest, top_bytes).await?;
            ctd.label_children(&name, &top).await?;
        }
        ctd.put_image(&name, &top).await?;
        info!(image = %name, digest = %top.digest, ms = started.elapsed().as_millis() as u64, "image pulled");
        Ok(())
    }
}

/// The requests of one pull: the registry's base URL and credentials.
struct Session<'a> {
    puller: &'a Puller,
    base: String,
    host: String,
    repository: String,
    /// The `Authorization` value, once the registry asked for one.
    authorization: Mutex<Option<String>>,
}

type BlobStream = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;

impl<'a> Session<'a> {
    fn new(puller: &'a Puller, image: &ImageRef) -> Self {
        // Docker Hub's API lives on another host than its name.
        let host = if image.registry == "docker.io" {
            "registry-1.docker.io".to_owned()
        } else {
            image.registry.clone()
        };
        let scheme = if puller.config.insecure.contains(&image.registry) {
            "http"
        } else {
            "https"
        };
        Session {
            puller,
            base: format!("{scheme}://{host}/v2/{}", image.repository),
            host: image.registry.clone(),
            repository: image.repository.clone(),
            authorization: Mutex::new(None),
        }
    }

    /// Fetches a manifest or index by tag or digest.
    async fn manifest(&self, reference: &str) -> Result<(Descriptor, Vec<u8>), String> {
        let url = format!("{}/manifests/{reference}", self.base);
        let resp = self.get(&url, Some(oci::MANIFEST_ACCEPT)).await?;
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading manifest: {e}"))?
            .to_bytes();
        if body.len() > 8 << 20 {
            return Err("manifest larger than 8 MiB".into());
        }
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            // Fall back to the document's own mediaType.
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| oci::MEDIA_OCI_MANIFEST.to_owned())
        } else {
            media_type
        };
        let desc = Descriptor {
            media_type,
            digest: oci::sha256_digest(&body),
            size: body.len() as i64,
            ..Default::default()
        };
        Ok((desc, body.to_vec()))
    }

    /// Opens a blob as a stream of chunks.
    async fn blob(&self, digest: &str) -> Result<BlobStream, String> {
        let url = format!("{}/blobs/{digest}", self.base);
        let resp = self.get(&url, None).await?;
        let stream = BodyStream::new(resp.into_body()).filter_map(|frame| async move {
            match frame {
                Ok(f) => f.into_data().ok().map(Ok),
                Err(e) => Some(Err(std::io::Error::other(e))),
            }
        });
        Ok(stream.boxed())
    }

    /// GET with auth and redirects; anything but 200 is an error naming the status.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let mut url = url.to_owned();
        let mut authorized = false;
        for _ in 0..8 {
            let uri: Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
            let same_registry = uri.authority().map(|a| a.as_str()) == self.base_authority();
            let mut req = Request::builder().method(Method::GET).uri(uri);
            if let Some(accept) = accept {
                req = req.header(header::ACCEPT, accept);
            }
            if same_registry {
                if let Some(auth) = self.authorization().await {
                    req = req.header(header::AUTHORIZATION, auth);
                }
            }
            let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
            let resp =
                tokio::time::timeout(Duration::from_secs(30), self.puller.client.request(req))
                    .await
                    .map_err(|_| format!("{url}: no answer within 30 s"))?
                    .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
            match resp.status() {
                StatusCode::OK => return Ok(resp),
                s if s.is_redirection() => {
                    let location = resp
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| format!("{url}: redirect without a location"))?;
                    url = resolve_location(&url, location);
                }
                StatusCode::UNAUTHORIZED if !authorized => {
                    let challenge = resp
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    self.authenticate(&challenge).await?;
                    authorized = true;
                }
                StatusCode::NOT_FOUND => return Err(format!("{url}: not found in the registry")),
                s => return Err(format!("{url}: registry answered {s}")),
            }
        }
        Err(format!("{url}: too many redirects"))
    }

    fn base_authority(&self) -> Option<&str> {
        let rest = self.base.split_once("://")?.1;
        rest.split('/').next()
    }

    async fn authorization(&self) -> Option<String> {
        self.authorization.lock().await.clone()
    }

    /// Answers a `WWW-Authenticate` challenge: basic with the configured
    /// credentials, or a bearer token from the named realm.
    async fn authenticate(&self, challenge: &str) -> Result<(), String> {
        let creds = self.puller.config.auth.get(&self.host);
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = parse_challenge(params);
        if scheme.eq_ignore_ascii_case("basic") {
            let creds = creds.ok_or("the registry wants credentials and none are configured")?;
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", creds.username, creds.password));
            *self.authorization.lock().await = Some(format!("Basic {encoded}"));
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(format!("unsupported auth challenge {challenge:?}"));
        }
        let realm = params
            .get("realm")
            .ok_or("auth challenge without a realm")?;
        let mut url = format!("{realm}?");
        if let Some(service) = params.get("service") {
            url.push_str(&format!("service={}&", encode(service)));
        }
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        url.push_str(&format!("scope={}", encode(&scope)));
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("bad token URL {url}: {e}"))?;
        let mut req = Request::builder().method(Method::GET).uri(uri);
        if let Some(c) = creds {
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            req = req.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = self
            .puller
            .client
            .request(req)
            .await
            .map_err(|e| format!("token service {realm}: {}", error_chain(&e)))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("token service {realm} answered {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| format!("token: {e}"))?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or("token service sent no token")?;
        debug!(realm = %realm, "got a registry token");
        *self.authorization.lock().await = Some(format!("Bearer {token}"));
        Ok(())
    }
}

/// `key="value", key2="value2"` → map.
fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = next.trim_start_matches(',').trim();
    }
    out
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn resolve_location(current: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let (scheme, rest) = current.split_once("://").unwrap_or(("https", current));
    let authority = rest.split('/').next().unwrap_or(rest);
    if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = current.rsplit_once('/').map_or(current, |(d, _)| d);
        format!("{dir}/{location}")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull");
    }

    #[test]
    fn resolves_redirects() {
        assert_eq!(
            resolve_location("http://r:5000/v2/a/blobs/x", "/storage/x"),
            "http://r:5000/storage/x"
        );
        assert_eq!(
            resolve_location("http://r:5000/v2/a/blobs/x", "https://cdn/x"),
            "https://cdn/x"
        );
    }

    #[test]
    fn reads_docker_auth_files() {
        let mut c = RegistryConfig::default();
        let auth = base64::engine::general_purpose::STANDARD.encode("me:secret");
        c.load_auth_file(
            format!(r#"{{"auths":{{"https://reg.example:5000/":{{"auth":"{auth}"}}}}}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            c.auth["reg.example:5000"],
            RegistryAuth {
                username: "me".into(),
                password: "secret".into()
            }
        );
        assert!(c
            .load_auth_file(br#"{"auths":{"x":{"auth":"!!"}}}"#)
            .is_err());
    }
}
