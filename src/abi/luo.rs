//! The orchestrator's node (`kho-luo-v1`): sessions, objects and their
//! payloads, one version each.
//!
//! ```text
//! luo {
//!     compatible = "kho-luo-v1";
//!     session-N {                        // N = 0, 1, ... in order
//!         kho,name = "NAME";             // unique among sessions
//!         object-T {                     // T = the token in hex, unique in the session
//!             kho,token = [LE u64];
//!             kho,family = "FAMILY";
//!             payload-K {                // K = 0, 1, ...: best version first
//!                 kho,version = "FAMILY-vN";
//!                 kho,features = [LE u64 required, LE u64 optional];
//!                 kho,data = [bytes];
//!             };
//!         };
//!     };
//! };
//! ```

/// The node's version.
pub const LUO_VERSION: &str = "kho-luo-v1";

/// The node's name.
pub const NODE: &str = "luo";
