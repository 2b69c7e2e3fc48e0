//! Agent executables for tests that publish releases: minimal images of
//! each platform's container format carrying the release metadata section
//! a kanade-agent build embeds (what `admit_agent_binary` reads).

use kanade_shared::agent_metadata::fixtures;

/// A Windows x86_64 kanade-agent image of `version` (key: the version).
pub fn windows(version: &str) -> Vec<u8> {
    fixtures::pe_x86_64(
        ".kanade",
        &fixtures::meta("kanade-agent", version, "windows-x86_64"),
    )
}

/// A Linux x86_64 kanade-agent image (key: `<version>-linux-x86_64`).
pub fn linux(version: &str) -> Vec<u8> {
    fixtures::elf_x86_64(&[(
        "",
        ".kanade",
        &fixtures::meta("kanade-agent", version, "linux-x86_64"),
    )])
}

/// A macOS arm64 kanade-agent image (key: `<version>-macos-aarch64`).
pub fn macos(version: &str) -> Vec<u8> {
    fixtures::macho_arm64(&[(
        "__DATA",
        "__kanade",
        &fixtures::meta("kanade-agent", version, "macos-aarch64"),
    )])
}
