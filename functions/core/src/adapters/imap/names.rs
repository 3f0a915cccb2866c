//! Pure helpers of the IMAP sink: folder names in the server's namespace,
//! modified UTF-7, IMAP strings, flags, dates and Message-ID headers.

use chrono::{DateTime, Utc};

/// The server's personal namespace: folders of the user live under `prefix`,
/// levels are separated by `delimiter` (`None`: a flat server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub prefix: String,
    pub delimiter: Option<char>,
}

/// The IMAP name of a configured folder. Configured folders always use `/`
/// between levels (`Inbox/XIP`); the server's delimiter replaces it, the
/// personal-namespace prefix goes in front (Cyrus and Courier: `INBOX.`), and
/// `INBOX`, which lives outside every namespace, is matched case-insensitively.
/// `Inbox/XIP` becomes `INBOX.XIP` on Dovecot and `INBOX/XIP` on Exchange.
pub fn folder_name(folder: &str, ns: &Namespace) -> Result<String, String> {
    let segments: Vec<&str> = folder.split('/').collect();
    if segments.iter().any(|s| s.trim().is_empty()) {
        return Err(format!("folder name {folder:?} has an empty level"));
    }
    if segments
        .iter()
        .any(|s| s.chars().any(|c| c.is_control() || c == '*' || c == '%'))
    {
        return Err(format!(
            "folder name {folder:?} holds characters IMAP reserves"
        ));
    }
    let delimiter = match ns.delimiter {
        Some(d) => d,
        None if segments.len() == 1 => '/',
        None => {
            return Err(format!(
                "folder {folder:?} has levels but the server has a flat hierarchy"
            ))
        }
    };
    if let Some(bad) = segments.iter().find(|s| s.contains(delimiter)) {
        return Err(format!(
            "folder level {bad:?} contains the server's hierarchy delimiter {delimiter:?}"
        ));
    }
    let mut levels: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
    let name = if levels[0].eq_ignore_ascii_case("INBOX") {
        levels[0] = "INBOX".into();
        levels.join(&delimiter.to_string())
    } else {
        let prefix = if ns.prefix.eq_ignore_ascii_case("INBOX") {
            // A prefix without its delimiter (some servers announce "INBOX").
            format!("INBOX{delimiter}")
        } else {
            ns.prefix.clone()
        };
        format!("{prefix}{}", levels.join(&delimiter.to_string()))
    };
    Ok(encode_utf7(&name))
}

/// Modified UTF-7 (RFC 3501 section 5.1.3), the encoding of mailbox names.
pub fn encode_utf7(name: &str) -> String {
    fn flush(out: &mut String, pending: &mut Vec<u16>) {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        let encoded =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, bytes);
        out.push('&');
        out.push_str(&encoded.replace('/', ","));
        out.push('-');
        pending.clear();
    }
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut pending);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut out, &mut pending);
    out
}

/// An IMAP quoted string, or `None` when the value cannot be quoted (CR, LF,
/// NUL or 8-bit characters need a literal).
pub fn quoted(value: &str) -> Option<String> {
    if value
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0 || b >= 0x80)
    {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

/// The flag list of an APPEND, `(\Seen \Flagged)`, from the configured flags.
/// Only system flags that can be set and keyword atoms are accepted.
pub fn flag_list(flags: &[String]) -> Result<String, String> {
    const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted"];
    let mut out = Vec::with_capacity(flags.len());
    for flag in flags {
        let flag = flag.trim();
        if let Some(system) = SYSTEM.iter().find(|s| s.eq_ignore_ascii_case(flag)) {
            out.push(system.to_string());
        } else if !flag.is_empty()
            && !flag.starts_with('\\')
            && flag
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
        {
            out.push(flag.to_string());
        } else {
            return Err(format!("{flag:?} is not an IMAP flag the importer can set"));
        }
    }
    Ok(format!("({})", out.join(" ")))
}

/// INTERNALDATE as IMAP writes it: `"20-Nov-2026 08:01:02 +0000"`.
pub fn internal_date(date: DateTime<Utc>) -> String {
    format!("\"{}\"", date.format("%d-%b-%Y %H:%M:%S +0000"))
}

/// The Message-ID (without angle brackets) of a `HEADER.FIELDS (MESSAGE-ID)`
/// section, header folding undone.
pub fn message_id_from_header(section: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(section);
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("message-id") {
            return None;
        }
        let id = normalize_message_id(value);
        (!id.is_empty()).then_some(id)
    })
}

/// A Message-ID without surrounding blanks and angle brackets.
pub fn normalize_message_id(id: &str) -> String {
    let id = id.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id);
    id.trim().to_string()
}

/// Parses the personal namespace from a `* NAMESPACE` line:
/// `* NAMESPACE (("INBOX." ".")) NIL NIL` -> prefix `INBOX.`, delimiter `.`.
pub fn parse_namespace_line(line: &str) -> Option<Namespace> {
    let rest = line.strip_prefix("* NAMESPACE ")?.trim_start();
    let rest = rest.strip_prefix("((")?;
    let (prefix, rest) = parse_quoted(rest)?;
    let rest = rest.trim_start();
    let delimiter = if rest.starts_with("NIL") {
        None
    } else {
        let (delim, _) = parse_quoted(rest)?;
        let mut chars = delim.chars();
        let first = chars.next()?;
        chars.next().is_none().then_some(first)
    };
    Some(Namespace { prefix, delimiter })
}

/// A quoted string at the start of `input`, and what follows it.
fn parse_quoted(input: &str) -> Option<(String, &str)> {
    let mut chars = input.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &input[i + 2..])),
            c => out.push(c),
        }
    }
    None
}

/// A response line `TAG STATUS [CODE ...] text` split into status and the
/// rest, for the lines read before the response parser takes over.
pub fn split_status(line: &str) -> (String, String) {
    let mut parts = line.splitn(3, ' ');
    let _tag = parts.next();
    let status = parts.next().unwrap_or("").to_ascii_uppercase();
    let rest = parts.next().unwrap_or("").to_string();
    (status, rest)
}

/// The response code of a text such as `[AUTHORIZATIONFAILED] Authorization failed`.
pub fn response_code(text: &str) -> Option<String> {
    let inner = text.strip_prefix('[')?;
    let end = inner.find(']')?;
    let code = inner[..end].split(' ').next()?.to_ascii_uppercase();
    (!code.is_empty()).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ns(prefix: &str, delimiter: Option<char>) -> Namespace {
        Namespace {
            prefix: prefix.into(),
            delimiter,
        }
    }

    #[test]
    fn folders_follow_the_server_namespace_and_delimiter() {
        let dovecot = ns("", Some('.'));
        assert_eq!(folder_name("ICE Chat", &dovecot).unwrap(), "ICE Chat");
        assert_eq!(folder_name("Inbox/XIP", &dovecot).unwrap(), "INBOX.XIP");
        let exchange = ns("", Some('/'));
        assert_eq!(folder_name("Inbox/XIP", &exchange).unwrap(), "INBOX/XIP");
        let cyrus = ns("INBOX.", Some('.'));
        assert_eq!(folder_name("ICE Chat", &cyrus).unwrap(), "INBOX.ICE Chat");
        assert_eq!(folder_name("Inbox/XIP", &cyrus).unwrap(), "INBOX.XIP");
        assert_eq!(
            folder_name("Archive/Chat", &cyrus).unwrap(),
            "INBOX.Archive.Chat"
        );
        assert_eq!(folder_name("inbox", &cyrus).unwrap(), "INBOX");
        assert!(folder_name("a.b", &dovecot).is_err());
        assert!(folder_name("a//b", &dovecot).is_err());
        assert!(folder_name("a/b", &ns("", None)).is_err());
        assert!(folder_name("50%", &dovecot).is_err());
    }

    #[test]
    fn modified_utf7_matches_rfc_3501() {
        assert_eq!(encode_utf7("ICE Chat"), "ICE Chat");
        assert_eq!(encode_utf7("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(
            encode_utf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(encode_utf7("Grüße"), "Gr&APwA3w-e");
    }

    #[test]
    fn strings_flags_and_dates() {
        assert_eq!(quoted(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quoted("pa\r\nss").is_none());
        assert!(quoted("pässword").is_none());
        assert_eq!(
            flag_list(&["\\seen".into(), "$Archived".into()]).unwrap(),
            "(\\Seen $Archived)"
        );
        assert_eq!(flag_list(&[]).unwrap(), "()");
        assert!(flag_list(&["\\Recent".into()]).is_err());
        assert!(flag_list(&["a b".into()]).is_err());
        let date = Utc.with_ymd_and_hms(2026, 11, 5, 8, 1, 2).unwrap();
        assert_eq!(internal_date(date), "\"05-Nov-2026 08:01:02 +0000\"");
    }

    #[test]
    fn message_ids_are_read_from_folded_headers() {
        assert_eq!(
            message_id_from_header(b"Message-ID: <abc@ice-chat>\r\n\r\n").as_deref(),
            Some("abc@ice-chat")
        );
        assert_eq!(
            message_id_from_header(b"message-id:\r\n <long.id@x>\r\n\r\n").as_deref(),
            Some("long.id@x")
        );
        assert_eq!(message_id_from_header(b"\r\n"), None);
    }

    #[test]
    fn namespace_and_status_lines() {
        assert_eq!(
            parse_namespace_line("* NAMESPACE ((\"\" \".\")) NIL NIL"),
            Some(ns("", Some('.')))
        );
        assert_eq!(
            parse_namespace_line("* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"#shared.\" \".\"))"),
            Some(ns("INBOX.", Some('.')))
        );
        assert_eq!(parse_namespace_line("* NAMESPACE NIL NIL NIL"), None);
        let (status, rest) = split_status("a1 NO [AUTHORIZATIONFAILED] Authorization failed");
        assert_eq!(status, "NO");
        assert_eq!(response_code(&rest).as_deref(), Some("AUTHORIZATIONFAILED"));
        assert_eq!(response_code("no code"), None);
    }
}
