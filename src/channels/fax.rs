//! What a fax carries: the message's PDF and TIFF attachments, after a cover page rendered
//! in-process (`pdf-writer`). The cover page is the minimum necessary — who sends (the
//! organization) to whom (the fax number), how many pages follow, and a confidentiality
//! notice; the message text is on it only when the organization lists the message's purpose in
//! `fax_text_purposes` ([`crate::disclosure::fax_carries_text`]). Other attachment types are
//! refused (a permanent failure naming the type), never silently dropped.
//!
//! Providers that take one document (Telnyx `media_url`) get one PDF: the cover page and the
//! PDF attachments merged (`lopdf`); providers that take file parts (Phaxio `file[]`) get each
//! file as it is. Page counts are read from the documents (PDF page tree, TIFF directories).
//!
//! This module does not send anything: the connector engine (`crate::connectors`) does.

use std::collections::BTreeMap;

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

use super::{ChannelError, OutboundDelivery};

/// Largest document we fax (all files together).
pub const MAX_FAX_BYTES: usize = 50 * 1024 * 1024;
/// Most pages we fax in one delivery.
pub const MAX_FAX_PAGES: u32 = 500;
/// Longest message text a cover page carries (characters); longer texts are refused.
const MAX_COVER_TEXT_CHARS: usize = 20_000;

/// What the fax channel needs from the records (implemented by `crate::fax::FaxOffice`).
#[async_trait::async_trait]
pub trait FaxDesk: Send + Sync {
    /// Serves `data` for one fetch until `ttl_secs` have passed; the URL under `public_url`.
    async fn publish(
        &self,
        public_url: &str,
        delivery: &OutboundDelivery,
        content_type: &str,
        data: Vec<u8>,
        ttl_secs: u64,
    ) -> Result<String, ChannelError>;
    /// Records the fax the provider accepted as `provider_id` with `pages` pages.
    async fn sent(
        &self,
        provider: &str,
        provider_id: &str,
        delivery: &OutboundDelivery,
        pages: u32,
    ) -> Result<(), ChannelError>;
}

/// One file as the provider receives it.
#[derive(Debug, Clone)]
pub struct FaxFile {
    pub filename: String,
    /// `application/pdf` or `image/tiff`.
    pub content_type: String,
    pub data: bytes::Bytes,
    pub pages: u32,
}

/// Everything a fax delivery sends.
#[derive(Debug, Clone)]
pub struct FaxDocument {
    /// Cover page first, then the attachments in the sender's order.
    pub files: Vec<FaxFile>,
    /// Pages in all (cover page included).
    pub pages: u32,
}

impl FaxDocument {
    /// The files of a delivery, a cover page first when the message has text or the
    /// organization's cover page is the only thing to send.
    pub fn compose(delivery: &OutboundDelivery) -> Result<Self, ChannelError> {
        let mut attachments = Vec::new();
        let mut total = 0usize;
        for a in &delivery.attachments {
            total = total.saturating_add(a.data.len());
            if total > MAX_FAX_BYTES {
                return Err(ChannelError::Permanent(format!(
                    "fax documents exceed {} MiB",
                    MAX_FAX_BYTES / (1024 * 1024)
                )));
            }
            let pages = match a.content_type.as_str() {
                "application/pdf" => pdf_pages(&a.data).ok_or_else(|| {
                    ChannelError::Permanent(format!(
                        "attachment {} is not a readable PDF",
                        a.filename
                    ))
                })?,
                "image/tiff" => tiff_pages(&a.data).ok_or_else(|| {
                    ChannelError::Permanent(format!(
                        "attachment {} is not a readable TIFF",
                        a.filename
                    ))
                })?,
                other => {
                    return Err(ChannelError::Permanent(format!(
                        "a fax carries PDF and TIFF documents; attachment {} is {other}",
                        a.filename
                    )));
                }
            };
            attachments.push(FaxFile {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                data: a.data.clone(),
                pages,
            });
        }
        let following: u32 = attachments.iter().map(|f| f.pages).sum();
        let text = if crate::disclosure::fax_carries_text(
            &delivery.purpose,
            &delivery.sender.settings.fax_text_purposes,
        ) {
            delivery.body.trim()
        } else {
            ""
        };
        if text.chars().count() > MAX_COVER_TEXT_CHARS {
            return Err(ChannelError::Permanent(format!(
                "message text is longer than a fax cover page carries ({MAX_COVER_TEXT_CHARS} characters)"
            )));
        }
        let withheld = text.is_empty() && !delivery.body.trim().is_empty();
        let cover = Cover {
            from: &delivery.sender.name,
            to: &delivery.recipient,
            following,
            text,
            withheld,
        }
        .render();
        let mut files = vec![FaxFile {
            filename: "cover.pdf".into(),
            content_type: "application/pdf".into(),
            pages: cover.1,
            data: cover.0.into(),
        }];
        files.extend(attachments);
        let pages = files.iter().map(|f| f.pages).sum::<u32>();
        if pages > MAX_FAX_PAGES {
            return Err(ChannelError::Permanent(format!(
                "fax has {pages} pages; the limit is {MAX_FAX_PAGES}"
            )));
        }
        Ok(Self { files, pages })
    }

    /// The whole fax as one PDF (for providers that fetch one document). TIFF pages cannot be
    /// merged into it: a fax with TIFF attachments needs a provider that takes file parts.
    pub fn single_pdf(&self) -> Result<Vec<u8>, ChannelError> {
        if let Some(tiff) = self
            .files
            .iter()
            .find(|f| f.content_type != "application/pdf")
        {
            return Err(ChannelError::Permanent(format!(
                "this fax provider takes one PDF; attachment {} is {}",
                tiff.filename, tiff.content_type
            )));
        }
        if self.files.len() == 1 {
            return Ok(self.files[0].data.to_vec());
        }
        merge_pdfs(self.files.iter().map(|f| f.data.as_ref()))
            .map_err(|e| ChannelError::Permanent(format!("cannot assemble the fax PDF: {e}")))
    }
}

/// The cover page's content.
struct Cover<'a> {
    from: &'a str,
    to: &'a str,
    /// Pages after the cover page(s).
    following: u32,
    /// Message text (already allowed), or empty.
    text: &'a str,
    /// The message has text that policy keeps off the page.
    withheld: bool,
}

const NOTICE: &[&str] = &[
    "CONFIDENTIALITY NOTICE: This facsimile may contain protected health information that is",
    "privileged and confidential under federal and state law. It is intended only for the",
    "recipient named above. If you are not the intended recipient, any review, disclosure,",
    "copying or distribution is prohibited. If you received this fax in error, please notify",
    "the sender at once and destroy all copies.",
];

/// Letter size in points.
const PAGE_W: f32 = 612.0;
const PAGE_H: f32 = 792.0;
const MARGIN: f32 = 54.0;
const LINE: f32 = 14.0;
const WRAP_COLUMNS: usize = 88;
/// Text lines on a continuation page.
const LINES_PER_PAGE: usize = 48;
/// Text lines that fit on the first page below the header and above the notice.
const FIRST_PAGE_LINES: usize = 24;

impl Cover<'_> {
    /// The PDF and its page count.
    fn render(&self) -> (Vec<u8>, u32) {
        let lines = wrap(self.text, WRAP_COLUMNS);
        let mut chunks: Vec<&[String]> = Vec::new();
        let (first, mut rest) = lines.split_at(lines.len().min(FIRST_PAGE_LINES));
        chunks.push(first);
        while !rest.is_empty() {
            let (page, after) = rest.split_at(rest.len().min(LINES_PER_PAGE));
            chunks.push(page);
            rest = after;
        }
        let cover_pages = chunks.len() as u32;
        let total = cover_pages.saturating_add(self.following);

        let mut pdf = Pdf::new();
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let regular = Ref::new(3);
        let bold = Ref::new(4);
        let info = Ref::new(5);
        let mut next = 6;
        let mut alloc = || {
            let r = Ref::new(next);
            next += 1;
            r
        };
        let page_refs: Vec<(Ref, Ref)> = chunks.iter().map(|_| (alloc(), alloc())).collect();
        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree)
            .kids(page_refs.iter().map(|(p, _)| *p))
            .count(page_refs.len() as i32);
        pdf.type1_font(regular)
            .base_font(Name(b"Helvetica"))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
        pdf.type1_font(bold)
            .base_font(Name(b"Helvetica-Bold"))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
        pdf.document_info(info)
            .title(pdf_writer::TextStr("Fax cover"));
        for (n, ((page_ref, content_ref), chunk)) in page_refs.iter().zip(&chunks).enumerate() {
            let mut page = pdf.page(*page_ref);
            page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
                .parent(tree)
                .contents(*content_ref);
            let mut resources = page.resources();
            let mut fonts = resources.fonts();
            fonts.pair(Name(b"F1"), regular);
            fonts.pair(Name(b"F2"), bold);
            fonts.finish();
            resources.finish();
            page.finish();

            let mut c = Content::new();
            let mut y = PAGE_H - MARGIN - 24.0;
            let text = |c: &mut Content, font: &[u8], size: f32, y: f32, s: &str| {
                c.begin_text()
                    .set_font(Name(font), size)
                    .next_line(MARGIN, y)
                    .show(Str(&win_ansi(s)))
                    .end_text();
            };
            if n == 0 {
                text(&mut c, b"F2", 28.0, y, "FAX");
                y -= 40.0;
                for (label, value) in [
                    ("From:", self.from.to_string()),
                    ("To:", format!("fax {}", self.to)),
                    (
                        "Pages:",
                        format!(
                            "{total} including this cover page ({} following)",
                            self.following
                        ),
                    ),
                ] {
                    text(&mut c, b"F2", 12.0, y, label);
                    c.begin_text()
                        .set_font(Name(b"F1"), 12.0)
                        .next_line(MARGIN + 60.0, y)
                        .show(Str(&win_ansi(&value)))
                        .end_text();
                    y -= 20.0;
                }
                y -= 10.0;
                if self.withheld {
                    text(
                        &mut c,
                        b"F1",
                        11.0,
                        y,
                        "The message accompanying these documents is kept in the sender's secure records.",
                    );
                    y -= LINE;
                }
            } else {
                text(
                    &mut c,
                    b"F1",
                    9.0,
                    y,
                    &format!("Cover page continued ({} of {cover_pages})", n + 1),
                );
                y -= 24.0;
            }
            for line in chunk.iter() {
                text(&mut c, b"F1", 11.0, y, line);
                y -= LINE;
            }
            let mut ny = MARGIN + LINE * NOTICE.len() as f32;
            for line in NOTICE {
                text(&mut c, b"F1", 8.5, ny, line);
                ny -= LINE * 0.85;
            }
            pdf.stream(*content_ref, &c.finish());
        }
        (pdf.finish(), cover_pages)
    }
}

/// Text in WinAnsi (Latin-1 range as is; anything else as `?`), control characters dropped.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// Wraps text at `columns` characters on spaces (long words are cut).
fn wrap(text: &str, columns: usize) -> Vec<String> {
    let mut lines = Vec::new();
    if text.is_empty() {
        return lines;
    }
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let mut word: Vec<char> = word.chars().collect();
            while word.len() > columns {
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                let rest = word.split_off(columns);
                lines.push(word.iter().collect());
                word = rest;
            }
            let word: String = word.into_iter().collect();
            if line.chars().count() + word.chars().count() + 1 > columns && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        lines.push(line);
    }
    lines
}

/// Pages of a PDF (its page tree), `None` when it cannot be read.
pub fn pdf_pages(data: &[u8]) -> Option<u32> {
    let doc = lopdf::Document::load_mem(data).ok()?;
    u32::try_from(doc.get_pages().len()).ok().filter(|n| *n > 0)
}

/// Pages of a TIFF (its chain of image file directories), `None` when it is not one.
pub fn tiff_pages(data: &[u8]) -> Option<u32> {
    let little = match data.get(..4)? {
        [b'I', b'I', 42, 0] => true,
        [b'M', b'M', 0, 42] => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = data.get(at..at + 2)?.try_into().ok()?;
        Some(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let mut offset = u32_at(4)? as usize;
    let mut pages = 0u32;
    let mut seen = std::collections::HashSet::new();
    while offset != 0 {
        if !seen.insert(offset) || pages >= MAX_FAX_PAGES * 2 {
            return None;
        }
        let entries = u16_at(offset)? as usize;
        pages += 1;
        offset = u32_at(offset + 2 + entries * 12)? as usize;
    }
    (pages > 0).then_some(pages)
}

/// Several PDFs as one, pages in order. Attributes a page inherits from its page tree
/// (resources, media box, rotation) are copied onto it, since the tree is rebuilt.
pub fn merge_pdfs<'a>(pdfs: impl Iterator<Item = &'a [u8]>) -> Result<Vec<u8>, String> {
    use lopdf::{Dictionary, Document, Object, ObjectId};
    const INHERITED: [&[u8]; 4] = [b"Resources", b"MediaBox", b"CropBox", b"Rotate"];
    let mut merged = Document::with_version("1.5");
    let mut max_id = 1;
    let mut pages: Vec<(ObjectId, Dictionary)> = Vec::new();
    let mut objects: BTreeMap<ObjectId, Object> = BTreeMap::new();
    for data in pdfs {
        let mut doc = Document::load_mem(data).map_err(|e| e.to_string())?;
        doc.renumber_objects_with(max_id);
        max_id = doc.max_id + 1;
        for (_, id) in doc.get_pages() {
            let mut page = doc
                .get_object(id)
                .and_then(Object::as_dict)
                .map_err(|e| e.to_string())?
                .clone();
            // Walk up the tree for inherited attributes (bounded: a loop is refused).
            let mut parent = page.get(b"Parent").and_then(Object::as_reference).ok();
            let mut depth = 0;
            while let Some(pid) = parent {
                depth += 1;
                if depth > 64 {
                    return Err("page tree too deep".into());
                }
                let Ok(node) = doc.get_object(pid).and_then(Object::as_dict) else {
                    break;
                };
                for key in INHERITED {
                    if !page.has(key)
                        && let Ok(value) = node.get(key)
                    {
                        page.set(key, value.clone());
                    }
                }
                parent = node.get(b"Parent").and_then(Object::as_reference).ok();
            }
            pages.push((id, page));
        }
        objects.extend(doc.objects);
    }
    let page_ids: std::collections::HashSet<ObjectId> = pages.iter().map(|(id, _)| *id).collect();
    for (id, object) in objects {
        let kind = object.type_name().unwrap_or(b"");
        if page_ids.contains(&id) || kind == b"Catalog" || kind == b"Pages" || kind == b"Outlines" {
            continue;
        }
        merged.objects.insert(id, object);
    }
    let tree_id = (max_id, 0);
    let catalog_id = (max_id + 1, 0);
    let mut kids = Vec::with_capacity(pages.len());
    for (id, mut page) in pages {
        page.set("Parent", tree_id);
        merged.objects.insert(id, Object::Dictionary(page));
        kids.push(Object::Reference(id));
    }
    let count = kids.len() as i64;
    merged.objects.insert(
        tree_id,
        Object::Dictionary(Dictionary::from_iter(vec![
            ("Type", Object::Name(b"Pages".to_vec())),
            ("Kids", Object::Array(kids)),
            ("Count", Object::Integer(count)),
        ])),
    );
    merged.objects.insert(
        catalog_id,
        Object::Dictionary(Dictionary::from_iter(vec![
            ("Type", Object::Name(b"Catalog".to_vec())),
            ("Pages", Object::Reference(tree_id)),
        ])),
    );
    merged.trailer.set("Root", catalog_id);
    merged.max_id = max_id + 1;
    merged.renumber_objects();
    merged.compress();
    let mut out = Vec::new();
    merged.save_to(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_on_words_and_cuts_long_ones() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("one\n\ntwo", 10), vec!["one", "", "two"]);
        assert!(wrap("", 10).is_empty());
    }

    #[test]
    fn cover_pages_count_and_merge() {
        let cover = Cover {
            from: "Riverside Family Clinic",
            to: "+15555550123",
            following: 2,
            text: "",
            withheld: true,
        }
        .render();
        assert_eq!(cover.1, 1);
        assert_eq!(pdf_pages(&cover.0), Some(1));
        let long = "word ".repeat(5000);
        let two = Cover {
            from: "x",
            to: "y",
            following: 0,
            text: &long,
            withheld: false,
        }
        .render();
        assert!(two.1 > 2);
        assert_eq!(pdf_pages(&two.0), Some(two.1));
        let merged = merge_pdfs([cover.0.as_slice(), two.0.as_slice()].into_iter()).unwrap();
        assert_eq!(pdf_pages(&merged), Some(1 + two.1));
    }

    #[test]
    fn tiff_directories_are_pages() {
        // Two IFDs with no entries: header, IFD at 8 -> IFD at 14 -> end.
        let mut t = b"II*\0".to_vec();
        t.extend_from_slice(&8u32.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&14u32.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(tiff_pages(&t), Some(2));
        // A loop is refused.
        let mut looped = b"II*\0".to_vec();
        looped.extend_from_slice(&8u32.to_le_bytes());
        looped.extend_from_slice(&0u16.to_le_bytes());
        looped.extend_from_slice(&8u32.to_le_bytes());
        assert_eq!(tiff_pages(&looped), None);
        assert_eq!(tiff_pages(b"%PDF"), None);
    }
}
