//! Tests of `validate` on literal sources.
