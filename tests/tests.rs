//! All integration tests in one binary (one link step on a 2-core machine).

mod it;
