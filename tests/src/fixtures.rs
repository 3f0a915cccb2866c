//! What many tests share: the bundled sample export, and reading a mail
//! back as a mail client would (mail-parser, an independent reader).

use mail_parser::MessageParser;

/// The bundled ICE Chat sample export (examples/ice/).
pub const SAMPLE: &str = include_str!("../../examples/ice/sample-export.xml");

/// A mail as mail-parser reads it (it must be one).
pub fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    MessageParser::default()
        .parse(raw)
        .expect("mail-parser reads the mail")
}

/// The values of a header, decoded as a mail client decodes unstructured
/// text (mail-parser leaves unknown `X-` headers raw, RFC 2047 words included).
pub fn header(message: &mail_parser::Message<'_>, name: &str) -> Vec<String> {
    message
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .filter_map(|h| h.value().as_text())
        .map(|raw| {
            let probe = format!("Subject: {}\r\n\r\n", raw.trim());
            MessageParser::default()
                .parse(probe.as_bytes())
                .and_then(|parsed| parsed.subject().map(str::to_string))
                .unwrap_or_default()
        })
        .collect()
}
