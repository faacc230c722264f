//! The lookup page at `/`: a driver pastes signed meter data and sees whether it is billable; an
//! MSP or regulator looks up a charge point's key history as a timeline. The page checks the
//! registry's evidence itself (`assets/page/verify.js`, with WebCrypto), so it trusts the
//! registry key it pins, not the answers.
//!
//! Everything it needs is embedded in the binary and served from here; a Content Security
//! Policy forbids loading or sending anything to any other origin. The registry key and origin
//! are written into the page when the router is built, and the texts of the configured language
//! are filled in on the server (from `i18n.json`, which the page also uses to switch), so the
//! first render needs no script.

use std::collections::HashMap;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::config::PageLanguage;
use crate::grpc::audit::Identity;

const INDEX: &str = include_str!("../../assets/page/index.html");
const I18N: &str = include_str!("../../assets/page/i18n.json");

/// The page's files under `/assets/`: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../assets/page/app.js")),
    ("verify.js", "text/javascript; charset=utf-8", include_str!("../../assets/page/verify.js")),
    (
        "timeline.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/page/timeline.js"),
    ),
    ("style.css", "text/css; charset=utf-8", include_str!("../../assets/page/style.css")),
    ("i18n.json", "application/json", I18N),
];

/// Only this origin, for scripts, styles, images and requests alike; nothing may frame it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file as served: its bytes, type and entity tag.
#[derive(Clone)]
struct File {
    body: axum::body::Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

impl File {
    fn new(body: impl Into<axum::body::Bytes>, content_type: &'static str) -> Self {
        let body = body.into();
        let tag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..12]));
        Self {
            etag: HeaderValue::from_str(&tag).expect("hex is a valid header"),
            body,
            content_type,
        }
    }

    /// The file, or 304 when the browser holds this version: the page is small, but a phone
    /// on a weak connection should not fetch it twice.
    fn serve(&self, request: &HeaderMap) -> Response {
        let common = [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, self.etag.clone()),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ];
        if request.get(header::IF_NONE_MATCH) == Some(&self.etag) {
            return (StatusCode::NOT_MODIFIED, common).into_response();
        }
        let kind = [(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type))];
        (common, kind, self.body.clone()).into_response()
    }
}

/// Why the page's embedded files could not be prepared (a build defect, caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("the lookup page's texts: {0}")]
pub struct PageError(String);

/// `/` and `/assets/<file>` for the registry `identity`, opening in `language`.
pub fn routes(identity: &Identity, language: PageLanguage) -> Result<Router, PageError> {
    let index = File::new(render_index(identity, language)?, "text/html; charset=utf-8");
    let assets: HashMap<&'static str, File> =
        ASSETS.iter().map(|(name, kind, body)| (*name, File::new(*body, kind))).collect();
    Ok(Router::new()
        .route("/", get(move |headers: HeaderMap| async move { index.serve(&headers) }))
        .route(
            "/assets/{name}",
            get(
                move |axum::extract::Path(name): axum::extract::Path<String>,
                      headers: HeaderMap| {
                    let file = assets.get(name.as_str()).cloned();
                    async move {
                        match file {
                            Some(file) => file.serve(&headers),
                            None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
                        }
                    }
                },
            ),
        ))
}

/// The page with the registry's identity and the texts of `language` filled in.
fn render_index(identity: &Identity, language: PageLanguage) -> Result<String, PageError> {
    let texts: HashMap<String, HashMap<String, String>> =
        serde_json::from_str(I18N).map_err(|e| PageError(e.to_string()))?;
    let texts = texts
        .get(language.tag())
        .ok_or_else(|| PageError(format!("no texts for {}", language.tag())))?;
    let mut out = String::with_capacity(INDEX.len() + 4096);
    let mut rest = INDEX;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .map(|e| start + e)
            .ok_or_else(|| PageError("an unclosed {{ in index.html".into()))?;
        let name = &rest[start + 2..end];
        let value = match name {
            "lang" => language.tag().to_string(),
            "origin" => identity.origin.clone(),
            "key" => B64.encode(&identity.public_key_der),
            "fingerprint" => identity.fingerprint.clone(),
            _ => match name.strip_prefix("t:").and_then(|key| texts.get(key)) {
                Some(text) => text.clone(),
                None => return Err(PageError(format!("no text {name:?} in {}", language.tag()))),
            },
        };
        out.push_str(&escape(&value));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// HTML text and attribute escaping.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            origin: "keyregistry.test/<x>".into(),
            public_key_der: vec![1, 2, 3],
            public_key_pem: String::new(),
            key_id: "00000000".into(),
            fingerprint: "ab".repeat(32),
        }
    }

    #[test]
    fn every_text_the_page_names_exists_in_both_languages() {
        for language in [PageLanguage::De, PageLanguage::En] {
            let page = render_index(&identity(), language).expect("the page renders");
            assert!(!page.contains("{{"), "a placeholder was left in the {language:?} page");
            assert!(page.contains(&format!("<html lang=\"{}\"", language.tag())));
        }
        let texts: HashMap<String, HashMap<String, String>> =
            serde_json::from_str(I18N).expect("i18n.json is JSON");
        let (de, en) = (&texts["de"], &texts["en"]);
        let missing: Vec<_> = de.keys().filter(|k| !en.contains_key(*k)).collect();
        assert!(missing.is_empty(), "texts only in German: {missing:?}");
        let missing: Vec<_> = en.keys().filter(|k| !de.contains_key(*k)).collect();
        assert!(missing.is_empty(), "texts only in English: {missing:?}");
    }

    #[test]
    fn the_registry_identity_is_escaped_into_the_page() {
        let page = render_index(&identity(), PageLanguage::De).expect("the page renders");
        assert!(page.contains("keyregistry.test/&lt;x&gt;"));
        assert!(!page.contains("keyregistry.test/<x>"));
        assert!(page.contains(&B64.encode([1u8, 2, 3])));
    }
}
