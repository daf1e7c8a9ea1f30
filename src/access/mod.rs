//! Who may use the proxy (DESIGN.md §5): client identity (htpasswd users, client certificates, the
//! proxy's own bearer tokens) and the per-repository access rules, and where the proxy may go on a client's behalf (the tunnel policy). Pure policy and its data: the
//! listener and the registry handlers ask these modules, never the other way round.

pub mod htpasswd;
pub mod identity;
pub mod rules;
pub mod token;
pub mod tunnel;
pub mod verify;
