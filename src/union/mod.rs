//! The union filesystem core.
