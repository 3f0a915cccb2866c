//! XIP files end to end: signed with GnuPG, verified before extraction,
//! imported into Inbox/XIP; hostile and tampered files refused.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::FetchRequest;
use chat_archive_core::pipeline::Silent;
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::{SecretStore, SecretValue};
use integration_tests::gpg::Gpg;
use integration_tests::local::{Firm, FIRM_UID};
use mail_parser::{MessageParser, MimeHeaders};
use sha2::{Digest, Sha256};

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";
const ZOE: &str = "zoe.mueller@globex.example";
const PRODUCER: &str = "XIP producer <xip@vendor.example>";

/// An entry of the archive: name, content, and whether it is deflated.
struct Entry {
    name: String,
    bytes: Vec<u8>,
    listed: bool,
}

fn entry(name: &str, bytes: Vec<u8>) -> Entry {
    Entry {
        name: name.into(),
        bytes,
        listed: true,
    }
}

fn item(id: &str, emails: &[&str], attachment: Option<(&str, usize)>) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut attachments = Vec::new();
    if let Some((name, size)) = attachment {
        let path = format!("items/{id}/attachments/{name}");
        let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        attachments.push(
            serde_json::json!({"path": path, "name": name, "content_type": "application/pdf"}),
        );
        entries.push(entry(&path, bytes));
    }
    let doc = serde_json::json!({
        "id": id,
        "title": format!("Recap {id}"),
        "sender": {"name": "Sender", "email": emails[0]},
        "timestamp": "2026-11-20T09:30:00Z",
        "Email": emails,
        "body": format!("Body of {id}: Grüße"),
        "attachments": attachments,
    });
    entries.insert(
        0,
        entry(
            &format!("items/{id}/item.json"),
            serde_json::to_vec_pretty(&doc).unwrap(),
        ),
    );
    entries
}

fn manifest(entries: &[Entry]) -> Vec<u8> {
    let listed: Vec<_> = entries
        .iter()
        .filter(|e| e.listed)
        .map(|e| serde_json::json!({"path": e.name, "size": e.bytes.len(), "sha256": hex::encode(Sha256::digest(&e.bytes))}))
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "format": "xip", "version": 1, "producer": "test", "created": "2026-11-20T18:00:00Z", "entries": listed
    }))
    .unwrap()
}

/// Signs the manifest with GnuPG (detached, binary).
fn gpg_sign(gpg: &Gpg, manifest: &[u8], uid: &str, dir: &Path) -> Vec<u8> {
    let path = dir.join(format!(
        "manifest-{}.json",
        hex::encode(&Sha256::digest(manifest)[..6])
    ));
    std::fs::write(&path, manifest).unwrap();
    std::fs::read(gpg.detach_sign(&path, uid)).unwrap()
}

fn write_zip(path: &Path, manifest: Option<&[u8]>, signature: Option<&[u8]>, entries: &[Entry]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default().large_file(true);
    for e in entries {
        zip.start_file(e.name.as_str(), options).unwrap();
        zip.write_all(&e.bytes).unwrap();
    }
    if let Some(manifest) = manifest {
        zip.start_file("META-INF/manifest.json", options).unwrap();
        zip.write_all(manifest).unwrap();
    }
    if let Some(signature) = signature {
        zip.start_file("META-INF/manifest.json.sig", options)
            .unwrap();
        zip.write_all(signature).unwrap();
    }
    zip.finish().unwrap();
}

async fn firm_with_xip_signer() -> Firm {
    let firm = Firm::new(&[JDOE, ASMITH, ZOE], SignaturePolicy::Optional);
    firm.gpg.generate_signer(PRODUCER);
    let secrets = chat_archive_core::adapters::SecretsFile::new(firm.layout.secrets());
    let fields = BTreeMap::from([(
        fields::XIP_SIGNER_PUBLIC_KEY.to_string(),
        SecretValue::new(firm.gpg.export_public(PRODUCER)),
    )]);
    secrets.update("ice", fields).await.unwrap();
    firm
}

#[tokio::test]
async fn a_signed_xip_lands_in_inbox_xip_with_attachments_intact() {
    let firm = firm_with_xip_signer().await;
    let mut entries = item("0001", &[JDOE, ZOE], Some(("recap.pdf", 20 * 1024 * 1024)));
    entries.extend(item("0002", &[ASMITH, JDOE], None));
    entries.extend(item("0003", &[ZOE, "li.lei@globex.example"], None));
    let manifest_bytes = manifest(&entries);
    let signature = gpg_sign(&firm.gpg, &manifest_bytes, PRODUCER, firm.dir.path());
    let xip = firm.dir.path().join("VENDOR_2026-11-20.xip");
    write_zip(&xip, Some(&manifest_bytes), Some(&signature), &entries);
    // XIP files may come PGP-encrypted, like ICE exports.
    firm.gpg.encrypt(
        &xip,
        &firm.layout.drop_dir().join("VENDOR_2026-11-20.xip.pgp"),
        FIRM_UID,
        None,
        false,
    );

    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    assert!(summary.quarantined.is_empty(), "{:?}", summary.quarantined);

    let jdoe = firm.folder(JDOE, "Inbox/XIP");
    assert_eq!(jdoe.len(), 2);
    assert_eq!(firm.folder(ASMITH, "Inbox/XIP").len(), 1);
    assert!(
        firm.folder(ZOE, "Inbox/XIP").is_empty(),
        "no copy outside the firm's domains"
    );
    assert!(
        firm.folder(JDOE, "ICE Chat").is_empty(),
        "XIP mail goes to its own folder"
    );

    let with_attachment = jdoe
        .iter()
        .map(|raw| MessageParser::default().parse(raw.as_slice()).unwrap())
        .find(|m| m.subject().is_some_and(|s| s.contains("Recap 0001")))
        .expect("item 0001 imported");
    let pdf = with_attachment
        .attachments()
        .find(|a| a.attachment_name() == Some("recap.pdf"))
        .expect("attachment");
    let sent = &entries[1].bytes;
    assert_eq!(sent.len(), 20 * 1024 * 1024);
    // Digests, not bytes: a failure must not print 20 MB.
    assert!(
        pdf.contents().len() == sent.len()
            && Sha256::digest(pdf.contents()) == Sha256::digest(sent),
        "20 MB attachment altered: {} bytes received",
        pdf.contents().len()
    );
    assert!(with_attachment
        .attachments()
        .any(|a| a.attachment_name() == Some("item-0001.json")));
    assert!(with_attachment
        .body_text(0)
        .unwrap()
        .contains("Body of 0001: Grüße"));

    let status: chat_archive_core::status::DayStatus = serde_json::from_slice(
        &std::fs::read(
            firm.layout
                .store()
                .join("reports/xip/2026-11-20/status.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (status.available_from_source, status.imported, status.failed),
        (3, 2, 1)
    );
    assert!(status.counts_add_up());
    assert!(
        status
            .failures
            .iter()
            .all(|f| f.reason.contains("no participant maps")),
        "{:?}",
        status.failures
    );
}

#[tokio::test]
async fn hostile_or_tampered_xip_files_are_refused_whole() {
    let firm = firm_with_xip_signer().await;
    let work = firm.dir.path();
    let drop = firm.layout.drop_dir();
    let valid = item("v-1", &[JDOE], None);
    let sign = |manifest: &[u8]| gpg_sign(&firm.gpg, manifest, PRODUCER, work);

    // A flipped byte in one entry (same size), the manifest unchanged.
    let mut entries = item("h1", &[JDOE], Some(("a.pdf", 4096)));
    let m = manifest(&entries);
    entries[1].bytes[100] ^= 0x01;
    write_zip(
        &drop.join("X_2026-11-20_flipped.xip"),
        Some(&m),
        Some(&sign(&m)),
        &entries,
    );

    // The manifest edited after signing.
    let entries = item("h2", &[JDOE], None);
    let m = manifest(&entries);
    let signature = sign(&m);
    let edited = String::from_utf8(m)
        .unwrap()
        .replace("\"producer\": \"test\"", "\"producer\": \"evil\"")
        .into_bytes();
    write_zip(
        &drop.join("X_2026-11-20_edited.xip"),
        Some(&edited),
        Some(&signature),
        &entries,
    );

    // Signed by a key nobody configured.
    let stranger = Gpg::new();
    stranger.generate_signer("Stranger <s@else.example>");
    let entries = item("h3", &[JDOE], None);
    let m = manifest(&entries);
    write_zip(
        &drop.join("X_2026-11-20_stranger.xip"),
        Some(&m),
        Some(&gpg_sign(&stranger, &m, "s@else.example", work)),
        &entries,
    );

    // Unsigned under the default policy.
    let entries = item("h4", &[JDOE], None);
    write_zip(
        &drop.join("X_2026-11-20_unsigned.xip"),
        Some(&manifest(&entries)),
        None,
        &entries,
    );

    // Zip-slip: listed and signed, but the path escapes.
    let mut entries = item("h5", &[JDOE], None);
    entries.push(entry("../../evil.sh", b"#!/bin/sh\n".to_vec()));
    let m = manifest(&entries);
    write_zip(
        &drop.join("X_2026-11-20_zipslip.xip"),
        Some(&m),
        Some(&sign(&m)),
        &entries,
    );

    // A zip bomb: 64 MiB of zeros, listed and signed.
    let mut entries = item("h6", &[JDOE], None);
    entries.push(entry(
        "items/h6/attachments/zeros.bin",
        vec![0u8; 64 * 1024 * 1024],
    ));
    let m = manifest(&entries);
    write_zip(
        &drop.join("X_2026-11-20_bomb.xip"),
        Some(&m),
        Some(&sign(&m)),
        &entries,
    );

    // An entry missing from the manifest.
    let mut entries = item("h7", &[JDOE], None);
    entries.push(Entry {
        name: "items/h7/extra.txt".into(),
        bytes: b"smuggled".to_vec(),
        listed: false,
    });
    let m = manifest(&entries);
    write_zip(
        &drop.join("X_2026-11-20_unlisted.xip"),
        Some(&m),
        Some(&sign(&m)),
        &entries,
    );

    // And one good file in the same batch.
    let m = manifest(&valid);
    write_zip(
        &drop.join("X_2026-11-20_valid.xip"),
        Some(&m),
        Some(&sign(&m)),
        &valid,
    );

    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    let errors: BTreeMap<String, String> = summary
        .quarantined
        .iter()
        .map(|(k, e)| (k.clone(), e.to_string()))
        .collect();
    let expect = [
        ("flipped", "SHA-256 differs"),
        ("edited", "bad signature"),
        ("stranger", "bad signature"),
        ("unsigned", "not signed"),
        ("zipslip", "zip-slip"),
        ("bomb", "zip bomb"),
        ("unlisted", "not listed in the manifest"),
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (name, reason) in expect {
        let key = format!("raw/xip/X_2026-11-20_{name}.xip");
        let error = errors
            .get(&key)
            .unwrap_or_else(|| panic!("{key} not quarantined: {errors:#?}"));
        assert!(error.contains(reason), "{key}: {error}");
        assert!(firm.layout.store().join("quarantine").join(&key).is_file());
        assert!(
            !firm
                .layout
                .store()
                .join(format!("plain/xip/X_2026-11-20_{name}.xip"))
                .exists(),
            "{name} was extracted"
        );
    }
    // Only the valid file's item reached a mailbox.
    let inbox = firm.folder(JDOE, "Inbox/XIP");
    assert_eq!(inbox.len(), 1);
    let message = MessageParser::default().parse(inbox[0].as_slice()).unwrap();
    assert!(message.subject().unwrap().contains("Recap v-1"));
    let status: chat_archive_core::status::DayStatus = serde_json::from_slice(
        &std::fs::read(
            firm.layout
                .store()
                .join("reports/xip/2026-11-20/status.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!((status.imported, status.failed), (1, 7));
    assert!(status.counts_add_up());
}
