//! The import function. On one machine it takes its trigger event as a JSON file
//! (see `events/`) and runs against the embedded defaults in
//! `CHAT_ARCHIVE_DATA` (default `./archive-data`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(chat_archive_core::function::main(chat_archive_core::function::Function::Import).await?)
}
