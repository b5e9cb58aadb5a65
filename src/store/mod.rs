//! The content-addressed layer store.
