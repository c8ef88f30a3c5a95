//! Timer wheel for incremental flow expiry.
