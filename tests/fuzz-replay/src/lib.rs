//! Nothing here: the crate's one test (`tests/replay.rs`) compiles every
//! fuzz target of `fuzz/` as a module and replays its kept inputs.
