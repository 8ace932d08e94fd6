//! placeholder (work in progress)
