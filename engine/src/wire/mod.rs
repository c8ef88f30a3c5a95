//! Typed zero-copy views over header bytes (in the style of smoltcp's `wire`).
