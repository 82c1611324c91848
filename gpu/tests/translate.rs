//! Every shader translated the way each wgpu backend translates it: WGSL validated, then
//! written as Metal Shading Language (Apple GPUs) and HLSL (DirectX 12) by naga, the
//! translator wgpu uses. Only Vulkan runs in CI (on lavapipe); this is what catches a
//! shader that Metal or DirectX would reject before anyone runs it there.

use loupe_gpu::all_sources;
use naga::back::{hlsl, msl};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn shaders() -> Vec<(String, String)> {
    let all = all_sources();
    assert!(all.len() > 40, "{} shaders", all.len());
    all
}

fn validated(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    // unpack2x16float needs the first; wgpu grants it on Vulkan, Metal and DirectX 12
    // (its downlevel flag SHADER_F16_IN_F32), only some GL ES drivers lack it. The
    // subgroup kernels are built only where the adapter has the SUBGROUP feature.
    let caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32 | Capabilities::SUBGROUP;
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    (module, info)
}

#[test]
fn every_shader_translates_to_metal() {
    for (name, source) in shaders() {
        let (module, info) = validated(&name, &source);
        // Metal 2.4: what wgpu asks for on the Apple Silicon Macs it supports.
        let options = msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        };
        let (msl_source, _) =
            msl::write_string(&module, &info, &options, &msl::PipelineOptions::default())
                .unwrap_or_else(|e| panic!("{name} to MSL: {e:?}"));
        assert!(
            msl_source.contains("kernel void"),
            "{name}: no kernel in the MSL"
        );
    }
}

#[test]
fn every_shader_translates_to_hlsl() {
    for (name, source) in shaders() {
        let (module, info) = validated(&name, &source);
        let options = hlsl::Options {
            shader_model: hlsl::ShaderModel::V6_0,
            ..Default::default()
        };
        let pipeline = hlsl::PipelineOptions::default();
        let mut out = String::new();
        hlsl::Writer::new(&mut out, &options, &pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{name} to HLSL: {e:?}"));
        assert!(
            out.contains("[numthreads("),
            "{name}: no entry point in the HLSL:\n{out}"
        );
    }
}

/// Every shader's shared memory and workgroup fit what the device asks wgpu for (its
/// downlevel defaults: 16352 bytes, 256 threads), the least a Vulkan, Metal or DirectX 12
/// adapter has. wgpu does not check the memory at pipeline creation, so a kernel over it
/// would fail, or worse, only on the adapters with less.
#[test]
fn every_shader_fits_the_workgroup_limits() {
    let limits = wgpu::Limits::downlevel_defaults();
    let mut largest = (0, String::new());
    for (name, source) in shaders() {
        let (module, _) = validated(&name, &source);
        let bytes: u32 = module
            .global_variables
            .iter()
            .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
            .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()))
            .sum();
        assert!(
            bytes <= limits.max_compute_workgroup_storage_size,
            "{name}: {bytes} bytes of workgroup memory"
        );
        for entry in &module.entry_points {
            let threads: u32 = entry.workgroup_size.iter().product();
            assert!(
                threads <= limits.max_compute_invocations_per_workgroup,
                "{name}: {threads} threads a workgroup"
            );
        }
        largest = largest.max((bytes, name));
    }
    eprintln!("most workgroup memory: {} bytes ({})", largest.0, largest.1);
}
