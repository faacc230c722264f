//! Reading a log served as C2SP `tlog-tiles` over HTTP(S): the registry's own web face, a CDN
//! in front of it, or any static web server holding a copy of `registry audit export`'s
//! archive. Nothing read here is trusted: the export and follow that use it check the
//! checkpoint with the registry key the auditor pins, and the entries against its root.

use std::path::Path;

use registry_core::tiles::{self, WIDTH};

use crate::ClientError;

/// Bundles fetched at once.
const PARALLEL: usize = 8;

/// Longest checkpoint note read: a few lines and signatures.
const MAX_CHECKPOINT_BYTES: usize = 64 << 10;

/// A tile server.
#[derive(Debug, Clone)]
pub struct TileClient {
    base: String,
    http: reqwest::Client,
    poll: std::time::Duration,
}

impl TileClient {
    /// The tile server at `url` (`https://host/path/`: the directory holding `checkpoint` and
    /// `tile/`); `ca_cert` is a PEM file of CA certificates an https server must chain to, in
    /// addition to the system's.
    pub fn new(url: &str, ca_cert: Option<&Path>) -> Result<Self, ClientError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ClientError::Input(format!("--tiles {url:?}: an http:// or https:// URL")));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("registry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| ClientError::Input(format!("{}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError::Input(format!("{}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ClientError::Input(format!("--tiles: {e}")))?;
        let base = if url.ends_with('/') { url.to_string() } else { format!("{url}/") };
        Ok(Self { base, http, poll: std::time::Duration::from_secs(5) })
    }

    /// The same server, its checkpoint looked at every `poll` by a follow.
    pub fn polling(self, poll: std::time::Duration) -> Self {
        Self { poll, ..self }
    }

    /// How often a follow looks at the checkpoint.
    pub fn poll(&self) -> std::time::Duration {
        self.poll
    }

    /// `path`'s body, refused past `max` bytes: the server is not trusted to stop.
    async fn fetch(&self, path: &str, max: usize) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        let failed = |reason: String| ClientError::Http { url: url.clone(), reason };
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| failed(registry_core::error::chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        let too_long = || failed(format!("longer than the {max} bytes it can be"));
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_long());
        }
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| failed(registry_core::error::chain(&e)))?
        {
            if body.len() + chunk.len() > max {
                return Err(too_long());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The signed checkpoint's text (unchecked: the caller opens it with the pinned key).
    pub async fn checkpoint(&self) -> Result<String, ClientError> {
        let bytes = self.fetch("checkpoint", MAX_CHECKPOINT_BYTES).await?;
        String::from_utf8(bytes).map_err(|_| ClientError::Http {
            url: format!("{}checkpoint", self.base),
            reason: "the checkpoint is not UTF-8 text".into(),
        })
    }

    /// Entries `start..end` of the log of `size` entries, from its entry bundles (a partial
    /// bundle at the end, as the checkpoint's size names it).
    pub async fn entries(
        &self,
        start: u64,
        end: u64,
        size: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
        let (first, last) = (start / WIDTH, end.div_ceil(WIDTH));
        let mut bundles: Vec<Option<Vec<Vec<u8>>>> = vec![None; (last - first) as usize];
        let mut running = tokio::task::JoinSet::new();
        let mut next = first;
        while next < last || !running.is_empty() {
            while next < last && running.len() < PARALLEL {
                let (client, n) = (self.clone(), next);
                running.spawn(async move { (n, client.bundle(n, tiles::width_in(n, size)).await) });
                next += 1;
            }
            let Some(done) = running.join_next().await else { break };
            let (n, bundle) =
                done.map_err(|e| ClientError::Input(format!("a fetch failed: {e}")))?;
            bundles[(n - first) as usize] = Some(bundle?);
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        for (i, bundle) in bundles.into_iter().enumerate() {
            let base = (first + i as u64) * WIDTH;
            for (j, entry) in bundle.unwrap_or_default().into_iter().enumerate() {
                let position = base + j as u64;
                if (start..end).contains(&position) {
                    out.push((position, entry));
                }
            }
        }
        Ok(out)
    }

    async fn bundle(&self, n: u64, width: u64) -> Result<Vec<Vec<u8>>, ClientError> {
        let path = tiles::tile_path(None, n, width);
        // Each entry is framed by a two-byte length.
        let bytes = self.fetch(&path, width as usize * (2 + u16::MAX as usize)).await?;
        let (entries, broken) = tiles::decode_bundle(&bytes, width);
        match broken {
            None => Ok(entries),
            Some(b) => Err(ClientError::Verification(format!(
                "{}{path}: entry {}: {}",
                self.base,
                n * WIDTH + b.index,
                b.reason
            ))),
        }
    }
}
