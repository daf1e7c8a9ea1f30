//! Who may use the proxy, and where it may go on their behalf.

pub mod tunnel;
