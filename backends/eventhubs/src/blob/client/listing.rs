//! Reading a `List Blobs` answer (XML) into blob items, without an XML tree: the few elements
//! the store needs, by their place in the document.

use std::collections::BTreeMap;

use tributary::Timestamp;

use super::BlobItem;
use super::signing::parse_http_date;

pub(super) struct Listing {
    pub(super) items: Vec<BlobItem>,
    pub(super) next_marker: Option<String>,
}

/// A `<Blob>` element being read: name, ETag, last modified, metadata.
type PartialBlob = (String, String, Option<Timestamp>, BTreeMap<String, String>);

/// Reads a `List Blobs` answer: `<Blobs><Blob><Name/><Properties><Last-Modified/><Etag/>…
/// </Properties><Metadata><name>value</name>…</Metadata></Blob>…</Blobs><NextMarker/>`.
pub(super) fn parse_listing(xml: &str) -> std::result::Result<Listing, String> {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    let mut items = Vec::new();
    let mut next_marker = None;
    // The open elements, innermost last.
    let mut path: Vec<String> = Vec::new();
    let mut current: Option<PartialBlob> = None;
    for token in Tokenizer::from(xml.trim_start_matches('\u{feff}')) {
        match token.map_err(|e| e.to_string())? {
            Token::ElementStart { local, .. } => {
                let name = local.as_str().to_string();
                if name == "Blob" {
                    current = Some(Default::default());
                }
                path.push(name);
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Empty | ElementEnd::Close(..) => {
                    let closed = path.pop();
                    if closed.as_deref() == Some("Blob")
                        && let Some((name, etag, last_modified, metadata)) = current.take()
                    {
                        let etag = if etag.starts_with('"') {
                            etag
                        } else {
                            format!("\"{etag}\"")
                        };
                        items.push(BlobItem {
                            name,
                            etag,
                            last_modified: last_modified.ok_or("a blob without Last-Modified")?,
                            metadata,
                        });
                    }
                }
            },
            Token::Text { text } | Token::Cdata { text, .. } => {
                let value = unescape(text.as_str());
                let depth = path.len();
                let parent = depth.checked_sub(2).map(|i| path[i].as_str());
                let element = path.last().map(String::as_str);
                match (&mut current, parent, element) {
                    (Some(blob), Some("Blob"), Some("Name")) => blob.0.push_str(&value),
                    (Some(blob), Some("Properties"), Some("Etag")) => blob.1.push_str(&value),
                    (Some(blob), Some("Properties"), Some("Last-Modified")) => {
                        blob.2 = parse_http_date(&value)
                    }
                    (Some(blob), Some("Metadata"), Some(name)) => {
                        blob.3
                            .entry(name.to_ascii_lowercase())
                            .or_default()
                            .push_str(&value);
                    }
                    (None, Some("EnumerationResults"), Some("NextMarker")) => {
                        next_marker = Some(value)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(Listing { items, next_marker })
}

fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_reads_names_etags_times_metadata_and_the_marker() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:1/devstoreaccount1" ContainerName="c"><Prefix>ns/hub/$default/ownership/</Prefix><Blobs><Blob><Name>ns/hub/$default/ownership/0</Name><Properties><Creation-Time>Mon, 30 Nov 2026 12:00:00 GMT</Creation-Time><Last-Modified>Mon, 30 Nov 2026 12:00:01 GMT</Last-Modified><Etag>0x8DB1</Etag><Content-Length>0</Content-Length></Properties><Metadata><ownerid>a&amp;b</ownerid></Metadata></Blob><Blob><Name>ns/hub/$default/ownership/1</Name><Properties><Last-Modified>Mon, 30 Nov 2026 12:00:02 GMT</Last-Modified><Etag>"0x8DB2"</Etag></Properties><Metadata><OwnerId></OwnerId></Metadata></Blob></Blobs><NextMarker>m2</NextMarker></EnumerationResults>"#;
        let page = parse_listing(xml).unwrap();
        assert_eq!(page.next_marker.as_deref(), Some("m2"));
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[0].name, "ns/hub/$default/ownership/0");
        assert_eq!(page.items[0].etag, "\"0x8DB1\"");
        assert_eq!(page.items[0].metadata["ownerid"], "a&b");
        assert_eq!(
            page.items[0].last_modified,
            parse_http_date("Mon, 30 Nov 2026 12:00:01 GMT").unwrap()
        );
        assert_eq!(page.items[1].etag, "\"0x8DB2\"");
        assert_eq!(page.items[1].metadata.get("ownerid"), None);
    }
}
