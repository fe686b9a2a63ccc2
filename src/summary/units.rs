//! Figures in units a person reads, for `tal summary`'s text: durations as
//! h:m:s, bytes in decimal units (1 kB = 10³ B, 1 MB = 10⁶ B, 1 GB = 10⁹ B,
//! as `seff`, jobstats and disk vendors write them, and said once in the
//! text by [`BYTES_LEGEND`]), rates per second, CPU time in CPU-hours, and
//! energy in J or kWh.
//!
//! Every formatter takes any `f64` a file may hold: what is not a finite
//! number reads `n/a`, and the largest finite values stay a few characters
//! wide (a figure past the last unit is written in that unit), so a hostile
//! figure cannot make a line long.

/// Said once where the text shows bytes.
pub const BYTES_LEGEND: &str =
    "bytes in decimal units: 1 kB = 1000 B, 1 MB = 10^6 B, 1 GB = 10^9 B";

/// Seconds for a person: `1h02m03s`, `4m05.6s`, `7.89s`, `12.3ms`; `>100 y`
/// past a century (a duration that long is a wrong clock or a wrong file),
/// `n/a` for what is not a number.
pub fn secs(s: f64) -> String {
    const CENTURY: f64 = 100.0 * 365.25 * 86_400.0;
    if !s.is_finite() {
        "n/a".into()
    } else if s < 0.0 {
        format!("-{}", secs(-s))
    } else if s > CENTURY {
        ">100 y".into()
    } else if s >= 3600.0 {
        format!(
            "{}h{:02}m{:02.0}s",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64,
            s % 60.0
        )
    } else if s >= 60.0 {
        format!("{}m{:04.1}s", (s / 60.0) as u64, s % 60.0)
    } else if s >= 1.0 {
        format!("{s:.2}s")
    } else {
        format!("{:.1}ms", s * 1000.0)
    }
}

/// A value in the largest of `units` (each `step` times the one before)
/// that keeps it at least 1, with 3 significant digits: `433 MB`, `67.1 MB`,
/// `4.35 MB`; `n/a` for what is not a finite number.
fn scaled(v: f64, step: f64, units: &[&str]) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let (sign, mut x) = if v < 0.0 { ("-", -v) } else { ("", v) };
    let mut u = 0;
    while x >= step && u + 1 < units.len() {
        x /= step;
        u += 1;
    }
    if x >= 1000.0 {
        // Past the last unit (only a wrong figure is): short all the same.
        return format!("{sign}{x:.2e} {}", units[u]);
    }
    let digits = if u == 0 || x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    format!("{sign}{x:.digits$} {}", units[u])
}

/// Bytes, decimal: `512 B`, `4.35 MB`, `1.20 GB`.
pub fn bytes(b: f64) -> String {
    scaled(b, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB", "EB"])
}

/// Bytes per second, decimal: `210 MB/s`.
pub fn rate(b_per_s: f64) -> String {
    scaled(
        b_per_s,
        1000.0,
        &["B/s", "kB/s", "MB/s", "GB/s", "TB/s", "PB/s", "EB/s"],
    )
}

/// CPU time in CPU-hours, 3 significant digits (`0.0125 CPU-h`, `12.5
/// CPU-h`), with the seconds beside it while under an hour (`0.000472
/// CPU-h (1.70s)`), where CPU-hours alone would read as nothing.
pub fn cpu_hours(cpu_s: f64) -> String {
    if !cpu_s.is_finite() {
        return "n/a".into();
    }
    let h = cpu_s / 3600.0;
    let text = if h == 0.0 {
        "0 CPU-h".to_string()
    } else if h.abs() >= 100.0 {
        format!("{h:.0} CPU-h")
    } else {
        // 3 significant digits.
        let digits = (2 - h.abs().log10().floor() as i32).clamp(0, 12) as usize;
        format!("{h:.digits$} CPU-h")
    };
    if cpu_s.abs() < 3600.0 {
        format!("{text} ({})", secs(cpu_s))
    } else {
        text
    }
}

/// Energy: joules up to 36 kJ (0.01 kWh), kWh past it (`1520 J`, `0.420
/// kWh`).
pub fn energy(j: f64) -> String {
    const KWH: f64 = 3.6e6;
    if !j.is_finite() {
        "n/a".into()
    } else if j.abs() < 0.01 * KWH {
        format!("{j:.0} J")
    } else {
        let kwh = j / KWH;
        let digits = (2 - kwh.abs().log10().floor() as i32).clamp(0, 3) as usize;
        format!("{kwh:.digits$} kWh")
    }
}

/// A percentage: `23.4 %`; `n/a` for what is not a number.
pub fn percent(p: f64) -> String {
    if p.is_finite() {
        format!("{p:.1} %")
    } else {
        "n/a".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_sanely_whatever_their_size() {
        assert_eq!(secs(0.0123), "12.3ms");
        assert_eq!(secs(7.891), "7.89s");
        assert_eq!(secs(3723.0), "1h02m03s");
        assert_eq!(secs(-5.0), "-5.00s");
        assert_eq!(secs(1e26), ">100 y");
        assert_eq!(secs(f64::INFINITY), "n/a");
        assert_eq!(secs(f64::NAN), "n/a");
    }

    #[test]
    fn bytes_are_decimal_with_three_significant_digits() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(999.0), "999 B");
        assert_eq!(bytes(1000.0), "1.00 kB");
        assert_eq!(bytes(433_192_960.0), "433 MB");
        assert_eq!(bytes(67_108_864.0), "67.1 MB");
        assert_eq!(bytes(4_345_856.0), "4.35 MB");
        assert_eq!(bytes(1.2e9), "1.20 GB");
        assert_eq!(bytes(-2500.0), "-2.50 kB");
        // u64::MAX stays short: it is 18.4 EB.
        assert_eq!(bytes(u64::MAX as f64), "18.4 EB");
        assert_eq!(bytes(f64::MAX), "1.80e290 EB");
        assert_eq!(bytes(f64::NAN), "n/a");
        assert_eq!(rate(210e6), "210 MB/s");
        assert_eq!(rate(f64::INFINITY), "n/a");
    }

    #[test]
    fn cpu_time_reads_in_cpu_hours() {
        assert_eq!(cpu_hours(0.0), "0 CPU-h (0.0ms)");
        assert_eq!(cpu_hours(1.7), "0.000472 CPU-h (1.70s)");
        assert_eq!(cpu_hours(45.0), "0.0125 CPU-h (45.00s)");
        assert_eq!(cpu_hours(3600.0 * 12.5), "12.5 CPU-h");
        assert_eq!(cpu_hours(3600.0 * 1234.0), "1234 CPU-h");
        assert_eq!(cpu_hours(f64::NAN), "n/a");
    }

    #[test]
    fn energy_reads_in_joules_then_kwh() {
        assert_eq!(energy(1520.4), "1520 J");
        assert_eq!(energy(35_999.0), "35999 J");
        assert_eq!(energy(3.6e6 * 0.42), "0.420 kWh");
        assert_eq!(energy(3.6e6 * 12.0), "12.0 kWh");
        assert_eq!(energy(3.6e6 * 1234.0), "1234 kWh");
        assert_eq!(energy(f64::NAN), "n/a");
        assert_eq!(percent(23.44), "23.4 %");
    }
}
