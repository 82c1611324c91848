//! Shared by the GPU crate's tests: the adapter under test and the error measure.
#![allow(dead_code)] // each test binary uses a different part

use loupe_gpu::{Gpu, GpuChoice, GpuOptions};

/// The adapter `LOUPE_GPU` names (default `software`: Mesa's lavapipe in CI), opened with
/// `options`; a clear failure when there is none.
pub fn open(options: GpuOptions) -> Gpu {
    let choice: GpuChoice = std::env::var("LOUPE_GPU")
        .unwrap_or_else(|_| "software".into())
        .parse()
        .expect("LOUPE_GPU");
    Gpu::open_with(choice, options)
        .expect("opening the adapter")
        .unwrap_or_else(|| {
            panic!(
                "no Vulkan adapter found for {choice}: install Mesa's software driver \
                 (Debian: apt-get install mesa-vulkan-drivers libvulkan1)"
            )
        })
}

/// Sum of squared differences over the reference's sum of squares.
pub fn nmse(got: &[f32], want: &[f64]) -> f64 {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    err / want.iter().map(|w| w * w).sum::<f64>().max(1e-30)
}
