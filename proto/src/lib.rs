//! SkyWalking v3 protocol.
