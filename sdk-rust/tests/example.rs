//! The example filter's own tests (examples/require-header/tests/filter.rs), run here against
//! the module this crate's build script made: the example uses the guest helpers, so this
//! checks them inside a real module in the real host.

include!("../examples/require-header/tests/filter.rs");
