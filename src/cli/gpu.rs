//! `loupe gpu`: the GPU adapters wgpu finds (Vulkan, Metal, DirectX 12), with what decides
//! whether and how loupe uses them.

use std::io::Write;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct GpuArgs {
    /// Print one JSON object per adapter instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure the memory bandwidth of the adapter --gpu picks with a copy kernel (1 GiB
    /// or the adapter's binding limit, best of 5 passes) instead of listing.
    #[arg(long)]
    pub bandwidth: bool,
    /// The adapter to measure: auto (the first hardware GPU), software, or an index.
    #[arg(long, value_name = "WHICH", env = "LOUPE_GPU", default_value = "auto")]
    pub gpu: loupe_gpu::GpuChoice,
}

pub fn run(args: &GpuArgs, out: &mut impl Write) -> Result<()> {
    if args.bandwidth {
        return bandwidth(args, out);
    }
    let all = loupe_gpu::adapters();
    if args.json {
        for a in &all {
            let v = serde_json::json!({
                "index": a.index,
                "name": a.name,
                "backend": a.backend,
                "kind": a.kind,
                "driver": a.driver,
                "max_binding_bytes": a.max_binding_bytes,
                "max_buffer_bytes": a.max_buffer_bytes,
                "max_workgroup_invocations": a.max_workgroup_invocations,
                "subgroups": a.subgroups,
                "shader_f16": a.shader_f16,
            });
            writeln!(out, "{v}")?;
        }
        return Ok(());
    }
    if all.is_empty() {
        writeln!(
            out,
            "no GPU adapter found (no Vulkan, Metal or DirectX 12 driver): loupe runs on the CPU"
        )?;
        return Ok(());
    }
    let auto = all.iter().find(|a| a.is_hardware()).map(|a| a.index);
    for a in &all {
        let mib = |b: u64| b >> 20;
        writeln!(
            out,
            "{}{} {} ({}, {}){}\n    driver {}; binding {} MiB, buffer {} MiB, {} threads per workgroup; subgroups {}, shader-f16 {}",
            if Some(a.index) == auto { "*" } else { " " },
            a.index,
            a.name,
            a.backend,
            a.kind,
            if a.is_hardware() { "" } else { " — software: used only with --gpu software or --gpu INDEX" },
            if a.driver.is_empty() { "unknown" } else { &a.driver },
            mib(a.max_binding_bytes),
            mib(a.max_buffer_bytes),
            a.max_workgroup_invocations,
            if a.subgroups { "yes" } else { "no" },
            if a.shader_f16 { "yes" } else { "no" },
        )?;
    }
    match auto {
        Some(i) => writeln!(out, "* the adapter --gpu auto (the default) picks: {i}")?,
        None => writeln!(
            out,
            "no hardware adapter: by default loupe runs on the CPU (--gpu software to use one of these)"
        )?,
    }
    Ok(())
}

fn bandwidth(args: &GpuArgs, out: &mut impl Write) -> Result<()> {
    let Some(gpu) = loupe_gpu::Gpu::open(args.gpu)? else {
        anyhow::bail!(
            "no GPU adapter matches --gpu {} (`loupe gpu` lists them; --gpu software takes a \
             software one)",
            args.gpu
        );
    };
    let bw = gpu.copy_bandwidth(1 << 30, 5)?;
    let s = gpu.summary();
    if args.json {
        let v = serde_json::json!({
            "adapter": s.name,
            "backend": s.backend,
            "kind": s.kind,
            "buffer_bytes": bw.buffer_bytes,
            "gb_per_s": bw.bytes_per_s / 1e9,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "{} ({}, {}): copy of {} MiB, {:.1} GB/s read + write (best of 5)",
            s.name,
            s.backend,
            s.kind,
            bw.buffer_bytes >> 20,
            bw.bytes_per_s / 1e9
        )?;
    }
    Ok(())
}
