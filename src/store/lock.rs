//! [`ConnectionLock`]: a guard that serializes work on one connection, released on drop.

/// Held while one task works on a connection's credentials.
pub struct ConnectionLock {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl ConnectionLock {
    /// A lock that runs `release` when dropped.
    pub fn with_release(release: impl FnOnce() + Send + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for ConnectionLock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}
