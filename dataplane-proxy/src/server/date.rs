//! The `Date` header of responses that come without one (RFC 9110,
//! section 6.6.1), formatted once a second per thread.

use hyper::header::HeaderValue;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHED: RefCell<(u64, HeaderValue)> = const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// Now, as an HTTP date.
pub fn now() -> HeaderValue {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let formatted = httpdate::fmt_http_date(now);
            *cached = (
                second,
                HeaderValue::try_from(formatted).unwrap_or_else(|_| HeaderValue::from_static("")),
            );
        }
        cached.1.clone()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_an_http_date_of_now() {
        let value = super::now();
        let parsed =
            httpdate::parse_http_date(value.to_str().expect("ASCII")).expect("an HTTP date");
        let off = std::time::SystemTime::now()
            .duration_since(parsed)
            .expect("not in the future");
        assert!(off.as_secs() <= 2, "{value:?}");
    }
}
