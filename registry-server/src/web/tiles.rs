//! The log over plain HTTP, as C2SP `tlog-tiles`: `/checkpoint`, hash tiles `/tile/<L>/<N>` and
//! entry bundles `/tile/entries/<N>`, byte for byte what `registry audit export` writes, so a
//! mirror or auditor can read the registry, a CDN in front of it, or a static copy of an export
//! alike.
//!
//! A tile's content never changes once its name exists (a partial tile's width is in its name),
//! so every tile is served as immutable for a year and kept in a bounded in-memory cache; only
//! the checkpoint changes, and it is served with a short lifetime. Nothing past the durable,
//! published head is ever served.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use registry_core::tiles::{self, TileName, WIDTH};
use tonic::Status;

use super::error::HttpError;
use crate::log::{LogReader, ReadError};

/// How long a checkpoint may be reused: about as often as a busy log gets a new one.
const CHECKPOINT_CACHE: &str = "public, max-age=2";
const TILE_CACHE: &str = "public, max-age=31536000, immutable";

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<TileKey, Bytes> for Weight {
    fn weight(&self, _: &TileKey, tile: &Bytes) -> u64 {
        tile.len() as u64 + 64
    }
}

type TileKey = (Option<u8>, u64, u64);

#[derive(Clone)]
struct Tiles {
    reader: LogReader,
    cache: Arc<quick_cache::sync::Cache<TileKey, Bytes, Weight>>,
}

/// `/checkpoint` and `/tile/...` over `reader`'s published head, keeping up to `cache_bytes`
/// of tiles in memory.
pub fn routes(reader: LogReader, cache_bytes: u64) -> Router {
    // An entry bundle is about 128 KiB, a hash tile 8 KiB.
    let items = (cache_bytes / (64 << 10)).max(64) as usize;
    let cache = quick_cache::sync::Cache::with_weighter(items, cache_bytes.max(1), Weight);
    let state = Tiles { reader, cache: Arc::new(cache) };
    Router::new()
        .route("/checkpoint", get(checkpoint))
        .route("/tile/{*rest}", get(tile))
        .with_state(state)
}

async fn checkpoint(State(tiles): State<Tiles>) -> Response {
    let head = tiles.reader.head();
    if head.checkpoint.is_empty() {
        return HttpError(Status::unavailable("this replica has copied no checkpoint yet"))
            .into_response();
    }
    let mut response = Response::new(Body::from(head.checkpoint.to_string()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CHECKPOINT_CACHE));
    response
}

async fn tile(State(tiles): State<Tiles>, Path(rest): Path<String>) -> Response {
    let Some(name) = tiles::parse_tile_path(&format!("tile/{rest}")) else {
        return not_found("no such tile name (C2SP tlog-tiles: tile/<L>/<N>[.p/<W>])");
    };
    let key = (name.level, name.index, name.width);
    let bytes = match tiles.cache.get(&key) {
        Some(bytes) => bytes,
        None => {
            let reader = tiles.reader.clone();
            let read = tokio::task::spawn_blocking(move || read_tile(&reader, name)).await;
            match read {
                Ok(Ok(Some(bytes))) => {
                    let bytes = Bytes::from(bytes);
                    tiles.cache.insert(key, bytes.clone());
                    bytes
                }
                Ok(Ok(None)) => return not_found("the log does not hold this tile yet"),
                Ok(Err(e)) => return HttpError(Status::from(e)).into_response(),
                Err(e) => {
                    return HttpError(Status::internal(format!("reading a tile failed: {e}")))
                        .into_response();
                }
            }
        }
    };
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(TILE_CACHE));
    response
}

fn not_found(why: &'static str) -> Response {
    (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], why)
        .into_response()
}

/// The tile's bytes, or `None` if the published log does not (yet) hold all of it.
fn read_tile(reader: &LogReader, name: TileName) -> Result<Option<Vec<u8>>, ReadError> {
    let size = reader.head().size;
    let Some(end) = name.index.checked_mul(WIDTH).and_then(|f| f.checked_add(name.width)) else {
        return Ok(None);
    };
    let first = end - name.width;
    match name.level {
        None => {
            if end > size {
                return Ok(None);
            }
            let entries: Vec<Vec<u8>> =
                reader.entries(first, end, name.width)?.into_iter().map(|(_, e)| e).collect();
            if entries.len() as u64 != name.width {
                return Ok(None);
            }
            let bundle = tiles::encode_bundle(&entries)
                .map_err(|e| ReadError::Store(crate::store::StoreError::Corrupt(e.to_string())))?;
            Ok(Some(bundle))
        }
        Some(level) => {
            // Tile level L holds the hashes of level 8L: L = 0 the leaves.
            let height = 8 * u32::from(level);
            if height >= 64 || end > size >> height {
                return Ok(None);
            }
            let store = reader.store();
            let mut bytes = Vec::with_capacity(name.width as usize * 32);
            for index in first..end {
                match store.node(height, index)? {
                    Some(hash) => bytes.extend_from_slice(&hash),
                    None => {
                        return Err(ReadError::Store(crate::store::StoreError::Corrupt(format!(
                            "the Merkle node ({height}, {index}) of a published tree is missing"
                        ))));
                    }
                }
            }
            Ok(Some(bytes))
        }
    }
}
