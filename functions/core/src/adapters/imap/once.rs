//! Exactly once per folder: the folder's Message-IDs as far as the sink has
//! read them, a group decided against them, and the reconcile that leaves
//! one copy of each Message-ID however writers interleave.

use super::*;

/// The Message-IDs of one folder as far as the sink has read it.
#[derive(Debug, Default)]
pub(super) struct FolderIndex {
    pub(super) uidvalidity: u32,
    pub(super) last_uid: u32,
    /// Message-ID -> UIDs holding it, ascending.
    pub(super) ids: HashMap<String, Vec<u32>>,
}

impl FolderIndex {
    pub(super) fn add(&mut self, id: Option<String>, uid: u32) {
        self.last_uid = self.last_uid.max(uid);
        if let Some(id) = id {
            let uids = self.ids.entry(id).or_default();
            if let Err(at) = uids.binary_search(&uid) {
                uids.insert(at, uid);
            }
        }
    }
}

impl ImapSink {
    /// One attempt at a group on a session: open the folder, catch up with
    /// its Message-IDs, append what is missing, reconcile.
    pub(super) async fn run_group(
        &self,
        session: &mut Session,
        folder: &str,
        jobs: &[Job<'_>],
        outcomes: &mut [Option<DeliveryOutcome>],
        index: &mut FolderIndex,
        sent: &mut HashSet<usize>,
    ) -> Result<(), Failure> {
        let name = folder_name(folder, &session.namespace).map_err(|reason| {
            Failure::Folder(format!(
                "folder {folder:?} in mailbox {}: {reason}",
                session.mailbox
            ))
        })?;
        let just_selected = select_or_create(session, &name).await?;
        let (uidvalidity, exists) = session
            .selected
            .as_ref()
            .map(|(_, v, e)| (*v, *e))
            .unwrap_or_default();
        if index.uidvalidity != uidvalidity {
            // A new folder, or the server renumbered it: read it whole.
            *index = FolderIndex {
                uidvalidity,
                ..Default::default()
            };
        }
        // Some servers (Exchange) answer `UID FETCH 1:*` in an empty folder
        // with BAD: an empty folder just selected has nothing to read.
        if !(just_selected && exists == 0) {
            catch_up(&mut session.wire, index, !just_selected).await?;
        }

        // Decide each job from what the folder holds now.
        let mut to_send: Vec<&Job<'_>> = Vec::new();
        let mut planned: HashSet<&str> = HashSet::new();
        let limit = session
            .wire
            .info
            .append_limit()
            .or(self.config.configured_limit());
        for job in jobs {
            if outcomes[job.index].is_some() {
                continue;
            }
            if index.ids.contains_key(&job.id) {
                // Sent by an attempt whose answer the broken connection took
                // with it: that copy is ours.
                let outcome = if sent.contains(&job.index) {
                    self.count(|s| s.appended += 1);
                    DeliveryOutcome::Delivered
                } else {
                    self.count(|s| s.already_present += 1);
                    DeliveryOutcome::AlreadyPresent
                };
                outcomes[job.index] = Some(outcome);
            } else if !planned.insert(job.id.as_str()) {
                // The same Message-ID twice in one batch: one copy.
                self.count(|s| s.already_present += 1);
                outcomes[job.index] = Some(DeliveryOutcome::AlreadyPresent);
            } else if let Some(limit) = limit.filter(|l| job.delivery.raw.len() > *l) {
                self.count(|s| s.refused += 1);
                outcomes[job.index] = Some(DeliveryOutcome::Refused(format!(
                    "message of {} bytes exceeds the {limit} bytes the server takes (its \
                     APPENDLIMIT, else imap.max_message_bytes)",
                    job.delivery.raw.len()
                )));
            } else {
                to_send.push(job);
            }
        }
        if to_send.is_empty() && index.last_uid == 0 {
            // Nothing stored and nothing sent: the folder is still empty.
            return Ok(());
        }
        self.append_through_throttling(session, &name, to_send, outcomes, index, sent)
            .await?;

        // Reconcile: see what arrived meanwhile (ours and any concurrent
        // writer's) and keep one copy of each Message-ID of the batch.
        let stored_any = jobs
            .iter()
            .any(|j| outcomes[j.index] == Some(DeliveryOutcome::Delivered));
        if !stored_any && index.last_uid == 0 {
            return Ok(());
        }
        let ids: HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        self.keep_one_copy(session, index, &ids).await?;
        if stored_any {
            // Another session's append can become visible here a moment
            // after the server acknowledged it (two writers racing on the
            // same last messages could each miss the other's copies): one
            // more look, so that at least one of them sees both.
            self.keep_one_copy(session, index, &ids).await?;
        }
        Ok(())
    }

    /// Reads what arrived in the folder since the index was last read and
    /// expunges all but the oldest copy of each of `ids`.
    pub(super) async fn keep_one_copy(
        &self,
        session: &mut Session,
        index: &mut FolderIndex,
        ids: &HashSet<&str>,
    ) -> Result<(), Failure> {
        catch_up(&mut session.wire, index, true).await?;
        let extra: Vec<u32> = ids
            .iter()
            .filter_map(|id| index.ids.get(*id))
            .flat_map(|uids| uids.iter().skip(1).copied())
            .collect();
        if !extra.is_empty() {
            self.remove_copies(session, index, extra).await?;
        }
        Ok(())
    }

    /// Expunges extra copies by UID, keeping the oldest copy of each
    /// Message-ID.
    pub(super) async fn remove_copies(
        &self,
        session: &mut Session,
        index: &mut FolderIndex,
        extra: Vec<u32>,
    ) -> Result<(), Failure> {
        let mailbox = session.mailbox.clone();
        if !self.config.remove_duplicates || !session.wire.info.has("UIDPLUS") {
            tracing::warn!(
                mailbox,
                copies = extra.len(),
                "extra copies of imported messages left in place (remove_duplicates off or no \
                 UIDPLUS to expunge them by UID)"
            );
            return Ok(());
        }
        let set = extra
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let (_, done) = session
            .wire
            .commands(&[
                format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
                format!("UID EXPUNGE {set}"),
            ])
            .await?;
        if let Some(bad) = done.iter().find(|d| d.status != DoneStatus::Ok) {
            tracing::warn!(mailbox, reason = %bad.text, "could not expunge extra copies");
            return Ok(());
        }
        for uids in index.ids.values_mut() {
            uids.retain(|uid| !extra.contains(uid));
        }
        self.count(|s| s.duplicates_removed += extra.len() as u64);
        tracing::info!(
            mailbox,
            copies = extra.len(),
            "extra copies from a concurrent import expunged"
        );
        Ok(())
    }
}

/// Selects the folder, creating (and subscribing) it when missing. Returns
/// whether a SELECT was issued now (a fresh SELECT is already in sync).
pub(super) async fn select_or_create(session: &mut Session, name: &str) -> Result<bool, Failure> {
    if session.selected.as_ref().is_some_and(|(n, _, _)| n == name) {
        return Ok(false);
    }
    let arg = names::quoted(name)
        .ok_or_else(|| Failure::Folder(format!("folder name {name:?} cannot be quoted")))?;
    session.selected = None;
    let (untagged, done) = session.wire.command(&format!("SELECT {arg}")).await?;
    let (untagged, done) = if done.status == DoneStatus::Ok {
        (untagged, done)
    } else {
        let (_, created) = session.wire.command(&format!("CREATE {arg}")).await?;
        // ALREADYEXISTS: a concurrent import created it first.
        if created.status != DoneStatus::Ok && !created.text.contains("ALREADYEXISTS") {
            return Err(Failure::Folder(format!(
                "cannot create folder {name:?} in mailbox {}: {}",
                session.mailbox, created.text
            )));
        }
        tracing::info!(mailbox = %session.mailbox, folder = name, "folder created");
        // Clients such as Outlook only show subscribed folders.
        session.wire.command(&format!("SUBSCRIBE {arg}")).await?;
        session.wire.command(&format!("SELECT {arg}")).await?
    };
    if done.status != DoneStatus::Ok {
        return Err(Failure::Folder(format!(
            "cannot open folder {name:?} in mailbox {}: {}",
            session.mailbox, done.text
        )));
    }
    let uidvalidity = untagged
        .iter()
        .find_map(|u| match u {
            Untagged::UidValidity(v) => Some(*v),
            _ => None,
        })
        .unwrap_or(0);
    let exists = untagged
        .iter()
        .find_map(|u| match u {
            Untagged::Exists(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0);
    session.selected = Some((name.to_string(), uidvalidity, exists));
    Ok(true)
}

/// Reads the Message-IDs of the messages the index has not seen yet
/// (`NOOP` first when the folder may have changed since it was selected).
pub(super) async fn catch_up(
    wire: &mut Wire,
    index: &mut FolderIndex,
    noop: bool,
) -> Result<(), Failure> {
    let from = index.last_uid.saturating_add(1);
    let fetch = format!("UID FETCH {from}:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])");
    let commands = if noop {
        vec!["NOOP".to_string(), fetch]
    } else {
        vec![fetch]
    };
    let (untagged, done) = wire.commands(&commands).await?;
    if let Some(bad) = done.iter().find(|d| d.status != DoneStatus::Ok) {
        return Err(Failure::Folder(format!(
            "cannot read the Message-IDs of the folder: {}",
            bad.text
        )));
    }
    for item in untagged {
        // Only answers to our FETCH carry the header section. The server also
        // reports other sessions' flag changes as FETCH responses (with a UID
        // after a UID command); counting those would move `last_uid` past
        // messages never read, and their copies would go unseen.
        if let Untagged::Fetch {
            uid: Some(uid),
            section: Some(section),
        } = item
        {
            // `N:*` also returns the last message when N is past it.
            if uid >= from {
                index.add(names::message_id_from_header(&section), uid);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_index_keeps_uids_per_message_id_in_order() {
        let mut index = FolderIndex::default();
        index.add(Some("a".into()), 7);
        index.add(Some("a".into()), 3);
        index.add(None, 9);
        index.add(Some("a".into()), 7);
        assert_eq!(index.ids["a"], vec![3, 7]);
        assert_eq!(index.last_uid, 9);
    }
}
