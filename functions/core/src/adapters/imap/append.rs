//! Appending a group of messages: pipelined APPENDs, grouped into
//! MULTIAPPEND where the server has it, paced, and sent again after a
//! throttling answer.

use super::*;

/// Messages whose APPEND the server throttled, and its words.
#[derive(Default)]
pub(super) struct Throttled<'j> {
    jobs: Vec<&'j Job<'j>>,
    reason: String,
}

/// Whether a refusal asks to come back later rather than refusing the
/// message: RFC 5530's `[UNAVAILABLE]` and `[LIMIT]`, and the `THROTTLED`
/// Gmail and Exchange Online write. A `[LIMIT]` about the message's size
/// (Dovecot's quota_max_mail_size answer) is final: waiting will not shrink it.
pub(super) fn is_throttling(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    let size = upper.contains("SIZE") || upper.contains("LARGE");
    upper.contains("[UNAVAILABLE]")
        || upper.contains("THROTTLED")
        || (upper.contains("[LIMIT]") && !size)
}

/// Upper bound of one MULTIAPPEND command's literals.
pub(super) const MULTIAPPEND_MAX_BYTES: usize = 8 << 20;

impl ImapSink {
    /// Appends the jobs; what the server throttles goes again after a pause
    /// with jitter, decided anew from a fresh look at the folder (a throttled
    /// answer may still have stored the message), until `throttle_retries`.
    pub(super) async fn append_through_throttling<'j>(
        &self,
        session: &mut Session,
        name: &str,
        mut to_send: Vec<&'j Job<'j>>,
        outcomes: &mut [Option<DeliveryOutcome>],
        index: &mut FolderIndex,
        sent: &mut HashSet<usize>,
    ) -> Result<(), Failure> {
        let mut round = 0;
        while !to_send.is_empty() {
            let throttled = self.append(session, name, &to_send, outcomes, sent).await?;
            if throttled.jobs.is_empty() {
                return Ok(());
            }
            round += 1;
            if round > self.config.throttle_retries {
                for job in throttled.jobs {
                    self.count(|s| s.refused += 1);
                    outcomes[job.index] = Some(DeliveryOutcome::Refused(format!(
                        "the server kept throttling after {} tries: {}",
                        round, throttled.reason
                    )));
                }
                return Ok(());
            }
            self.throttle_pause(round, &session.mailbox, &throttled.reason)
                .await;
            catch_up(&mut session.wire, index, true).await?;
            to_send = throttled
                .jobs
                .into_iter()
                .filter(|job| {
                    if !index.ids.contains_key(&job.id) {
                        return true;
                    }
                    self.count(|s| s.appended += 1);
                    outcomes[job.index] = Some(DeliveryOutcome::Delivered);
                    false
                })
                .collect();
        }
        Ok(())
    }

    /// Waits for the next APPEND slot when a rate is configured: slots are
    /// handed out one interval apart across every session of the sink.
    pub(super) async fn pace(&self) {
        let rate = self.config.max_appends_per_second;
        if rate == 0 {
            return;
        }
        let interval = Duration::from_secs(1) / rate;
        let slot = {
            let mut next = self.next_append.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Sleeps the throttling policy's pause for this round.
    pub(super) async fn throttle_pause(&self, round: u32, mailbox: &str, reason: &str) {
        self.count(|s| s.throttled += 1);
        let delay = self.config.throttle_policy().pause(round);
        tracing::warn!(
            mailbox,
            round,
            ?delay,
            reason,
            "IMAP server throttles; pausing"
        );
        tokio::time::sleep(delay).await;
    }

    /// Appends the jobs: several commands in flight, each a MULTIAPPEND of
    /// several messages when the server allows. A refused MULTIAPPEND stores
    /// nothing (RFC 3502), so its messages are sent again one by one to tell
    /// the refused ones from the rest.
    pub(super) async fn append<'j>(
        &self,
        session: &mut Session,
        name: &str,
        jobs: &[&'j Job<'j>],
        outcomes: &mut [Option<DeliveryOutcome>],
        sent: &mut HashSet<usize>,
    ) -> Result<Throttled<'j>, Failure> {
        let wire = &mut session.wire;
        let mailbox_arg = names::quoted(name)
            .ok_or_else(|| Failure::Folder(format!("folder name {name:?} cannot be quoted")))?;
        let multi = if wire.info.has("MULTIAPPEND") {
            self.config.multiappend_max_messages.max(1)
        } else {
            1
        };
        let mut queue: VecDeque<Vec<&'j Job<'j>>> = chunks(jobs, multi);
        let mut retry_alone: Vec<&'j Job<'j>> = Vec::new();
        let mut throttled = Throttled::default();
        let mut in_flight: VecDeque<(String, Vec<&'j Job<'j>>)> = VecDeque::new();
        let depth = self.config.pipeline_depth.max(1);
        loop {
            if in_flight.len() < depth {
                if let Some(chunk) = queue.pop_front() {
                    let tag = wire.tag();
                    for job in &chunk {
                        sent.insert(job.index);
                    }
                    self.pace().await;
                    self.count(|s| s.append_commands += 1);
                    match send_append(wire, &tag, &mailbox_arg, &chunk).await? {
                        Sent::Whole => in_flight.push_back((tag, chunk)),
                        Sent::Refused(done) => {
                            self.settle(done, chunk, outcomes, &mut retry_alone, &mut throttled)
                        }
                        Sent::Interleaved(done, refused) => {
                            // Another command completed while we waited for
                            // a continuation.
                            let at = in_flight.iter().position(|(t, _)| *t == done.tag);
                            if let Some((_, other)) = at.and_then(|at| in_flight.remove(at)) {
                                self.settle(
                                    done,
                                    other,
                                    outcomes,
                                    &mut retry_alone,
                                    &mut throttled,
                                );
                            }
                            match refused {
                                Some(own) => self.settle(
                                    own,
                                    chunk,
                                    outcomes,
                                    &mut retry_alone,
                                    &mut throttled,
                                ),
                                None => in_flight.push_back((tag, chunk)),
                            }
                        }
                    }
                    continue;
                }
            }
            if in_flight.is_empty() {
                if retry_alone.is_empty() {
                    break;
                }
                queue.extend(retry_alone.drain(..).map(|job| vec![job]));
                continue;
            }
            wire.flush().await?;
            match wire.read().await? {
                Event::Done(done) => {
                    let at = in_flight.iter().position(|(t, _)| *t == done.tag);
                    let Some((_, chunk)) = at.and_then(|at| in_flight.remove(at)) else {
                        return Err(Failure::Fatal(format!(
                            "IMAP server completed an unknown command {}",
                            done.tag
                        )));
                    };
                    self.settle(done, chunk, outcomes, &mut retry_alone, &mut throttled);
                }
                Event::Untagged(Untagged::Bye(text)) => {
                    return Err(Failure::Transport(format!(
                        "server is closing the connection: {text}"
                    )))
                }
                Event::Untagged(_) => {}
                Event::Continue => {
                    return Err(Failure::Fatal(
                        "IMAP server asked for a literal nobody sent".into(),
                    ))
                }
            }
        }
        Ok(throttled)
    }

    /// Records the completion of an APPEND.
    pub(super) fn settle<'j>(
        &self,
        done: Done,
        chunk: Vec<&'j Job<'j>>,
        outcomes: &mut [Option<DeliveryOutcome>],
        retry_alone: &mut Vec<&'j Job<'j>>,
        throttled: &mut Throttled<'j>,
    ) {
        if done.status != DoneStatus::Ok && is_throttling(&done.text) {
            // Nothing was stored; the messages go again after a pause.
            tracing::info!(reason = %done.text, messages = chunk.len(), "server throttles appends");
            throttled.jobs.extend(chunk);
            throttled.reason = done.text;
        } else if done.status == DoneStatus::Ok {
            for job in chunk {
                self.count(|s| s.appended += 1);
                outcomes[job.index] = Some(DeliveryOutcome::Delivered);
            }
        } else if chunk.len() > 1 {
            tracing::debug!(reason = %done.text, messages = chunk.len(), "MULTIAPPEND refused; sending one by one");
            retry_alone.extend(chunk);
        } else {
            for job in chunk {
                tracing::warn!(message_id = %job.id, reason = %done.text, "server refused a message");
                self.count(|s| s.refused += 1);
                outcomes[job.index] = Some(DeliveryOutcome::Refused(format!(
                    "the server refused the message: {}",
                    done.text
                )));
            }
        }
    }
}

/// Groups jobs into APPEND commands of at most `max` messages and
/// [`MULTIAPPEND_MAX_BYTES`].
pub(super) fn chunks<'j>(jobs: &[&'j Job<'j>], max: usize) -> VecDeque<Vec<&'j Job<'j>>> {
    let mut out = VecDeque::new();
    let mut current: Vec<&Job<'_>> = Vec::new();
    let mut bytes = 0;
    for job in jobs {
        let size = usize::try_from(job.delivery.raw.len()).unwrap_or(usize::MAX);
        if !current.is_empty() && (current.len() >= max || bytes + size > MULTIAPPEND_MAX_BYTES) {
            out.push_back(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(*job);
    }
    if !current.is_empty() {
        out.push_back(current);
    }
    out
}

pub(super) enum Sent {
    /// The command went out whole; its completion comes later.
    Whole,
    /// The server refused it before taking a literal.
    Refused(Done),
    /// While waiting for a continuation, another command completed (first);
    /// the second is this command's own early refusal, if any.
    Interleaved(Done, Option<Done>),
}

/// Writes one APPEND (MULTIAPPEND for several messages). Literals are
/// non-synchronizing when the server allows (LITERAL+, or LITERAL- up to
/// 4096 bytes); otherwise we wait for each continuation.
pub(super) async fn send_append(
    wire: &mut Wire,
    tag: &str,
    mailbox_arg: &str,
    chunk: &[&Job<'_>],
) -> Result<Sent, Failure> {
    let plus_any = wire.info.has("LITERAL+");
    let plus_small = wire.info.has("LITERAL-");
    let mut interleaved: Option<Done> = None;
    wire.write(format!("{tag} APPEND {mailbox_arg}").as_bytes())
        .await?;
    for job in chunk {
        // A spooled mail is read here, one at a time: only mails within the
        // server's limit get this far.
        let raw = job
            .delivery
            .raw
            .load()
            .map_err(|e| Failure::Transport(format!("reading the mail from its spool: {e}")))?;
        let plus = plus_any || (plus_small && raw.len() <= 4096);
        let head = format!(
            " {} {} {{{}{}}}\r\n",
            job.flags,
            names::internal_date(job.delivery.internal_date),
            raw.len(),
            if plus { "+" } else { "" }
        );
        wire.write(head.as_bytes()).await?;
        if !plus {
            wire.flush().await?;
            loop {
                match wire.read().await? {
                    Event::Continue => break,
                    Event::Done(done) if done.tag == tag => {
                        return Ok(match interleaved {
                            Some(other) => Sent::Interleaved(other, Some(done)),
                            None => Sent::Refused(done),
                        });
                    }
                    Event::Done(done) => {
                        if interleaved.is_some() {
                            // Two completions while one literal waits: the
                            // window is 1 deep in practice; keep it simple.
                            return Err(Failure::Fatal(
                                "IMAP server completed several commands during one literal".into(),
                            ));
                        }
                        interleaved = Some(done);
                    }
                    Event::Untagged(Untagged::Bye(text)) => {
                        return Err(Failure::Transport(format!(
                            "server is closing the connection: {text}"
                        )))
                    }
                    Event::Untagged(_) => {}
                }
            }
        }
        wire.write(&raw).await?;
    }
    wire.write(b"\r\n").await?;
    Ok(match interleaved {
        Some(other) => Sent::Interleaved(other, None),
        None => Sent::Whole,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn appends_are_grouped_by_count_and_size() {
        let small = vec![b'x'; 1000];
        let big = vec![b'x'; MULTIAPPEND_MAX_BYTES];
        let flags: Vec<String> = Vec::new();
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
        let deliveries: Vec<Delivery<'_>> = [&small, &small, &big, &small, &small, &small]
            .iter()
            .map(|raw| Delivery {
                mailbox: "a@x",
                folder: "F",
                message_id: "m",
                raw: (*raw).into(),
                internal_date: at,
                flags: &flags,
            })
            .collect();
        let jobs: Vec<Job<'_>> = deliveries
            .iter()
            .enumerate()
            .map(|(index, delivery)| Job {
                index,
                id: format!("m{index}"),
                delivery,
                flags: "()".into(),
            })
            .collect();
        let refs: Vec<&Job<'_>> = jobs.iter().collect();
        let sizes: Vec<usize> = chunks(&refs, 2).iter().map(Vec::len).collect();
        // The 8 MiB message closes the first group and fills its own.
        assert_eq!(sizes, vec![2, 1, 2, 1]);
        let sizes: Vec<usize> = chunks(&refs, 1).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1; 6]);
    }

    #[test]
    fn throttling_answers_and_size_limits() {
        assert!(is_throttling("[UNAVAILABLE] Server busy"));
        assert!(is_throttling("[LIMIT] Too many commands"));
        assert!(is_throttling("Command Error. 12 [THROTTLED]"));
        assert!(!is_throttling("[OVERQUOTA] Quota exceeded"));
        assert!(!is_throttling("Mail too large"));
        assert!(!is_throttling(
            "[LIMIT] Mail size is larger than the maximum size allowed by server configuration"
        ));
        let mut config = ImapConfig::default();
        assert_eq!(config.configured_limit(), None);
        config.auth = ImapAuth::ExchangeOnline {
            tenant: "t".into(),
            client_id: "c".into(),
            certificate_thumbprint: None,
            token_url: None,
            scope: None,
        };
        assert_eq!(config.configured_limit(), Some(35 << 20));
        config.max_message_bytes = Some(1000);
        assert_eq!(config.configured_limit(), Some(1000));
    }
}
