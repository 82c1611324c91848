//! Finding adapters: what [`adapters`] lists for `loupe gpu`, and which one [`GpuChoice`]
//! picks.

use std::fmt;
use std::str::FromStr;

use wgpu::{Backends, DeviceType};

/// Which adapter to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuChoice {
    /// The first hardware adapter (discrete before integrated); none when there is only a
    /// software one.
    Auto,
    /// The first adapter of any kind, software rasterizers (lavapipe, WARP) included.
    Software,
    /// The adapter with this index in [`adapters`].
    Index(usize),
    /// No GPU.
    Off,
}

impl FromStr for GpuChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => GpuChoice::Auto,
            "software" | "cpu-adapter" => GpuChoice::Software,
            "off" | "none" => GpuChoice::Off,
            n => GpuChoice::Index(n.parse().map_err(|_| {
                format!("--gpu takes auto, software, off or an adapter index, not {n:?}")
            })?),
        })
    }
}

impl fmt::Display for GpuChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuChoice::Auto => write!(f, "auto (a hardware adapter)"),
            GpuChoice::Software => write!(f, "software (any adapter)"),
            GpuChoice::Index(i) => write!(f, "adapter {i}"),
            GpuChoice::Off => write!(f, "off"),
        }
    }
}

/// One adapter as `loupe gpu` shows it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    /// "discrete", "integrated", "virtual", "cpu" (a software driver) or "other".
    pub kind: &'static str,
    pub driver: String,
    pub max_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    pub max_workgroup_invocations: u32,
    pub subgroups: bool,
    pub shader_f16: bool,
}

impl AdapterSummary {
    pub fn is_hardware(&self) -> bool {
        matches!(self.kind, "discrete" | "integrated")
    }
}

/// Keeps Mesa's Vulkan device-select layer from printing "error: XDG_RUNTIME_DIR is
/// invalid or not set in the environment." at every adapter listing where no session
/// runtime folder exists (root shells, `sudo`, containers, CI): the layer asks the Wayland
/// compositor which GPU it draws on, because wgpu enables the Wayland surface extension
/// on every instance, and libwayland says why it cannot connect on stderr. Without that
/// folder there is no compositor to ask, so the layer is turned off (`NODEVICE_SELECT=1`,
/// its own switch) unless the user configured it (`MESA_VK_DEVICE_SELECT`, `DRI_PRIME`,
/// `NODEVICE_SELECT`) or names a Wayland display. Sets the process environment: call it
/// first in `main`, before any thread exists.
pub fn quiet_mesa_device_select() {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let configured = ["MESA_VK_DEVICE_SELECT", "DRI_PRIME", "NODEVICE_SELECT"];
    if set("XDG_RUNTIME_DIR")
        || set("WAYLAND_DISPLAY")
        || set("WAYLAND_SOCKET")
        || configured
            .iter()
            .any(|name| std::env::var_os(name).is_some())
    {
        return;
    }
    std::env::set_var("NODEVICE_SELECT", "1");
}

pub(crate) fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: Backends::VULKAN | Backends::METAL | Backends::DX12,
        flags: wgpu::InstanceFlags::empty(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// The adapters in the order [`GpuChoice::Index`] counts them: discrete, integrated,
/// then the rest.
pub(crate) fn sorted_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut all = pollster::block_on(instance.enumerate_adapters(instance_backends()));
    all.sort_by_key(|a| match a.get_info().device_type {
        DeviceType::DiscreteGpu => 0,
        DeviceType::IntegratedGpu => 1,
        DeviceType::VirtualGpu => 2,
        DeviceType::Cpu => 3,
        DeviceType::Other => 4,
    });
    all
}

fn instance_backends() -> Backends {
    Backends::VULKAN | Backends::METAL | Backends::DX12
}

pub(crate) fn summarize(index: usize, a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let limits = a.limits();
    let features = a.features();
    AdapterSummary {
        index,
        name: info.name,
        backend: format!("{:?}", info.backend),
        kind: match info.device_type {
            DeviceType::DiscreteGpu => "discrete",
            DeviceType::IntegratedGpu => "integrated",
            DeviceType::VirtualGpu => "virtual",
            DeviceType::Cpu => "cpu",
            DeviceType::Other => "other",
        },
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_binding_bytes: limits.max_storage_buffer_binding_size,
        max_buffer_bytes: limits.max_buffer_size,
        max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
    }
}

/// Every adapter wgpu finds (Vulkan, Metal, DirectX 12), hardware or not.
pub fn adapters() -> Vec<AdapterSummary> {
    let instance = instance();
    sorted_adapters(&instance)
        .iter()
        .enumerate()
        .map(|(i, a)| summarize(i, a))
        .collect()
}

/// The adapter `choice` picks, with its summary; `None` when none matches.
pub(crate) fn pick(
    instance: &wgpu::Instance,
    choice: GpuChoice,
) -> Option<(wgpu::Adapter, AdapterSummary)> {
    let all = sorted_adapters(instance);
    let found = match choice {
        GpuChoice::Off => None,
        GpuChoice::Index(i) => all.into_iter().enumerate().nth(i),
        GpuChoice::Auto => all
            .into_iter()
            .enumerate()
            .find(|(i, a)| summarize(*i, a).is_hardware()),
        GpuChoice::Software => all.into_iter().enumerate().next(),
    };
    found.map(|(i, a)| {
        let s = summarize(i, &a);
        (a, s)
    })
}
