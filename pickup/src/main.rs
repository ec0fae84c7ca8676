//! pickup: moves local submissions from maildrop/ into the queue. The
//! maildrop directory is writable by every local user, so its files are
//! hostile input: opened without following symlinks, only regular files with
//! one link, size-limited, fully verified, and copied (never renamed) into a
//! new queue file after cleanup. The submitting user is the file's owner,
//! whatever the file says. A new queue file is durable before its maildrop
//! file is removed.
//!
//! When `drop_directory` is set, pickup also takes plain RFC 5322 files
//! from that directory (the IIS Pickup folder's replacement): see [`drop`].

mod drop;
mod scan;

fn main() {
    let started = queue::service::start("pickup");
    if let Err(e) = scan::run(started) {
        queue::log::fatal(1, &format!("{e:#}"));
    }
}
