//! The words of keyrot's commit messages, written by apply and read back by `log`,
//! `audit verify`, the report and the shared remote: the apply subject, the first
//! words of body lines that were not applied, and the git trailers
//! (`Keyrot-Plan: sha256:…`) that tie a commit to its plan. A leaf: it knows no plan
//! and no store, only the text.

pub(crate) const SUBJECT_PREFIX: &str = "keyrot apply:";
/// The first word of a commit body line for a key a provider step failed.
pub(crate) const FAILED: &str = "failed";
pub(crate) const TRAILER_FAILED: &str = "Keyrot-Failed";
/// The first word of a commit body line for an excepted decision.
pub(crate) const EXCEPTED: &str = "excepted";
pub(crate) const TRAILER_PLAN: &str = "Keyrot-Plan";
pub(crate) const TRAILER_POLICIES: &str = "Keyrot-Policies";
pub(crate) const TRAILER_NOW: &str = "Keyrot-Now";
/// Chains the apply commits: the previous one's id, or [`NO_PREVIOUS`].
pub(crate) const TRAILER_PREVIOUS: &str = "Keyrot-Previous";
pub(crate) const NO_PREVIOUS: &str = "none";

/// Whether a commit message is an apply commit's: the subject and a plan trailer.
pub(crate) fn is_apply_commit(message: &str) -> bool {
    message.starts_with(SUBJECT_PREFIX) && trailer(message, TRAILER_PLAN).is_some()
}

/// The value of the first `name: value` trailer line in `message`.
pub(crate) fn trailer<'m>(message: &'m str, name: &'m str) -> Option<&'m str> {
    trailers(message, name).next()
}

/// The values of every `name: value` trailer line in `message`.
pub(crate) fn trailers<'m>(message: &'m str, name: &'m str) -> impl Iterator<Item = &'m str> + 'm {
    message.lines().filter_map(move |l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(": "))
            .map(str::trim)
    })
}
