//! A file sent as `mlflow server` sends artifacts (`mlflow/server/handlers.py`
//! `_send_artifact`, `_response_with_file_attachment_headers`): streamed in chunks, always as an
//! attachment (`Content-Disposition: attachment; filename=...`), with a `Content-Type` by file
//! name ([`mime_type`]) and `X-Content-Type-Options: nosniff`, so a browser never renders an
//! uploaded file as a page of this server.
//!
//! The file name comes from whoever uploaded the file: quotes, backslashes, non-ASCII and control
//! characters are quoted or percent-encoded (RFC 6266 / RFC 5987), never copied into the header
//! raw, so a name cannot break the header or add one.

use std::path::Path;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::io::AsyncReadExt;
use unicode_normalization::UnicodeNormalization;

use super::error::ApiError;
use crate::registry::RegistryError;

/// Download chunk size.
const CHUNK: usize = 64 * 1024;

/// The names MLflow sends as `text/plain` whatever the extension table says
/// (`mlflow/utils/mime_type_utils.py` `get_text_extensions`): these extensions, and files
/// without an extension whose whole name is one of them (`MLmodel`; MLflow spells MLproject's
/// name `mlproject`, so only that spelling). Compared case-sensitively, as MLflow does.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt",
    "log",
    "err",
    "cfg",
    "conf",
    "cnf",
    "cf",
    "ini",
    "properties",
    "prop",
    "hocon",
    "toml",
    "yaml",
    "yml",
    "xml",
    "json",
    "js",
    "py",
    "py3",
    "csv",
    "tsv",
    "md",
    "rst",
    "ipynb",
    "MLmodel",
    "mlproject",
];

/// The `Content-Type` MLflow sends for a file of this name (`_guess_mime_type`): `text/plain`
/// for [`TEXT_EXTENSIONS`], else the extension table of `mime_guess`, else
/// `application/octet-stream`.
pub fn mime_type(file_name: &str) -> String {
    let ext = Path::new(file_name).extension().and_then(|e| e.to_str()).unwrap_or("");
    let key = if ext.is_empty() { file_name } else { ext };
    if TEXT_EXTENSIONS.contains(&key) {
        return "text/plain".into();
    }
    match mime_guess::from_path(file_name).first() {
        Some(m) => m.essence_str().to_string(),
        None => "application/octet-stream".into(),
    }
}

/// RFC 7230 token characters: such a name goes into the header unquoted (as werkzeug's
/// `quote_header_value` does).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A quoted-string: `\` and `"` escaped. Callers pass printable ASCII only.
fn quoted(s: &str) -> String {
    if is_token(s) {
        return s.to_string();
    }
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// RFC 5987 attr-char: what stays unencoded in `filename*` (Python's `quote(safe="!#$&+-.^_`|~")`).
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition` for a download of `file_name` (MLflow's
/// `_content_disposition_attachment`): `attachment; filename=<token or quoted>`; a name with
/// non-ASCII characters gets an ASCII fallback (NFKD, non-ASCII dropped, or `download`) and
/// `filename*=UTF-8''<percent-encoded>`. Control characters (which MLflow's own paths never hold)
/// are treated like non-ASCII: dropped from the fallback, percent-encoded in `filename*`.
pub fn content_disposition(file_name: &str) -> String {
    let plain = file_name.chars().all(|c| c.is_ascii() && !c.is_ascii_control());
    if plain {
        return format!("attachment; filename={}", quoted(file_name));
    }
    let fallback: String = file_name.nfkd().filter(|c| c.is_ascii() && !c.is_ascii_control()).collect();
    let fallback = if fallback.is_empty() { "download".to_string() } else { fallback };
    let encoded = utf8_percent_encode(file_name, ATTR_CHAR);
    format!("attachment; filename={}; filename*=UTF-8''{encoded}", quoted(&fallback))
}

/// The headers MLflow puts on every artifact download.
pub fn attachment_headers(resp: &mut Response, file_name: &str) {
    let h = resp.headers_mut();
    // Both values are built from printable ASCII only; the fallbacks are for a bug.
    let ct =
        HeaderValue::from_str(&mime_type(file_name)).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let cd = HeaderValue::from_str(&content_disposition(file_name)).unwrap_or(HeaderValue::from_static("attachment"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CONTENT_DISPOSITION, cd);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// Send the file at `path` (already checked to be inside the artifact root) as an attachment;
/// `shown` is the artifact path the messages name. A missing file is 404, a folder 400, with
/// MLflow's messages.
pub async fn send_file(path: &Path, shown: &str) -> Result<Response, ApiError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|_| ApiError::Registry(RegistryError::NotFound(format!("No such artifact: '{shown}'"))))?;
    if meta.is_dir() {
        return Err(ApiError::Registry(RegistryError::InvalidParameter(format!(
            "Artifact path refers to a directory, not a file: '{shown}'"
        ))));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::Internal(format!("opening {}: {e}", path.display())))?;
    let stream = futures_util::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    attachment_headers(&mut resp, &name);
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
    Ok(resp)
}

/// Send a stream of `size` bytes (an object from a bucket) as [`send_file`] sends a file: an
/// attachment named `file_name`, with MLflow's headers.
pub fn send_stream(stream: crate::artifact::store::ByteStream, size: u64, file_name: &str) -> Response {
    let mut resp = Body::from_stream(stream).into_response();
    attachment_headers(&mut resp, file_name);
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_as_mlflow_decides_them() {
        for (name, want) in [
            ("MLmodel", "text/plain"),
            ("mlproject", "text/plain"),
            ("MLproject", "application/octet-stream"),
            ("conda.yaml", "text/plain"),
            ("x.json", "text/plain"),
            ("a.png", "image/png"),
            ("r.pdf", "application/pdf"),
            ("x.jpg", "image/jpeg"),
            ("x.zip", "application/zip"),
            ("x.html", "text/html"),
            ("x.svg", "image/svg+xml"),
            ("x.TXT", "text/plain"),
            ("model.onnx", "application/octet-stream"),
            ("noext", "application/octet-stream"),
            ("txt", "text/plain"),
        ] {
            assert_eq!(mime_type(name), want, "{name}");
        }
    }

    #[test]
    fn names_are_quoted_or_encoded_never_copied_raw() {
        assert_eq!(content_disposition("MLmodel"), "attachment; filename=MLmodel");
        assert_eq!(content_disposition("weird name.txt"), "attachment; filename=\"weird name.txt\"");
        assert_eq!(content_disposition("q\"uote.bin"), "attachment; filename=\"q\\\"uote.bin\"");
        assert_eq!(content_disposition("b\\s"), "attachment; filename=\"b\\\\s\"");
        assert_eq!(
            content_disposition("日本語.csv"),
            "attachment; filename=.csv; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.csv"
        );
        assert_eq!(content_disposition("ä.bin"), "attachment; filename=a.bin; filename*=UTF-8''%C3%A4.bin");
        assert_eq!(content_disposition("日本"), "attachment; filename=download; filename*=UTF-8''%E6%97%A5%E6%9C%AC");
        let injected = content_disposition("a\r\nSet-Cookie: x=1.txt");
        assert_eq!(
            injected,
            "attachment; filename=\"aSet-Cookie: x=1.txt\"; filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x%3D1.txt"
        );
        for name in ["a\r\nb", "\u{7f}", "x\"\r\n\"", "é\n", "\t", ""] {
            let mut resp = Response::new(Body::empty());
            attachment_headers(&mut resp, name);
            let cd = resp.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().to_string();
            assert!(cd.starts_with("attachment; filename="), "{name:?} → {cd}");
            assert!(!cd.bytes().any(|b| b.is_ascii_control()), "{name:?} → {cd}");
            assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }
}
