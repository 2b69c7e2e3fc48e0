//! A hand-built Windows executable for tests that upload agent binaries.
//!
//! The backend reads an uploaded agent's version from the `VS_VERSIONINFO`
//! resource of the PE (`kanade_shared::exe_version::extract_pe_version`, which
//! uses `pelite`), so tests need real PE bytes carrying a chosen version. This
//! builds a small, conventional image that `pelite::pe64::PeFile` accepts, by
//! hand and with std only:
//!
//! ```text
//! file offset   contents
//! 0x000         IMAGE_DOS_HEADER ("MZ", e_lfanew = 0x40, no DOS stub)
//! 0x040         "PE\0\0"
//! 0x044         IMAGE_FILE_HEADER (x64, 1 section)
//! 0x058         IMAGE_OPTIONAL_HEADER64 (240 bytes, 16 data directories)
//! 0x148         IMAGE_SECTION_HEADER ".rsrc"
//! 0x170         zero padding up to SizeOfHeaders = FileAlignment = 0x200
//! 0x200         .rsrc raw data (RVA 0x1000), padded to FileAlignment:
//!   +0x00         type directory:     RT_VERSION (16) -> +0x18
//!   +0x18         name directory:     1           -> +0x30
//!   +0x30         language directory: 0x0409      -> +0x48
//!   +0x48         IMAGE_RESOURCE_DATA_ENTRY       -> RVA 0x1058
//!   +0x58         VS_VERSIONINFO
//!                   VS_FIXEDFILEINFO
//!                   StringFileInfo
//!                     StringTable "040904B0"
//!                       ProductVersion = version
//!                       FileVersion    = version
//!                   VarFileInfo
//!                     Translation = 0x0409, 0x04B0
//! ```
//!
//! There is no code: the image is never run, only parsed.

/// Where the headers end and the first section starts, in the file: the
/// conventional (and minimum) file alignment.
const FILE_ALIGNMENT: u32 = 0x200;
/// Section placement in memory: one page, as Windows' loader expects.
const SECTION_ALIGNMENT: u32 = 0x1000;
/// The NT headers follow the 64-byte DOS header directly. pelite requires
/// e_lfanew to be 4-aligned; 8 keeps the 64-bit fields of the optional header
/// naturally aligned too (pelite reads the headers through references).
const E_LFANEW: u32 = 0x40;
/// The 112 fixed bytes of IMAGE_OPTIONAL_HEADER64 plus 16 data directories of
/// 8 bytes each. pelite locates the section table through this field.
const SIZE_OF_OPTIONAL_HEADER: u16 = 112 + 16 * 8;
/// All headers (0x170 bytes) rounded up to the file alignment; the section's
/// raw data starts right there.
const SIZE_OF_HEADERS: u32 = FILE_ALIGNMENT;
/// The only section is mapped at the first page after the headers.
const RSRC_RVA: u32 = SECTION_ALIGNMENT;
/// Index of the resource table in the data directories.
const IMAGE_DIRECTORY_ENTRY_RESOURCE: usize = 2;

/// Resource type of version information.
const RT_VERSION: u32 = 16;
/// pelite's `version_info()` looks up the resource named 1 under RT_VERSION
/// (the `VS_VERSION_INFO` id every resource compiler uses).
const VS_VERSION_INFO_ID: u32 = 1;
/// US English, the language of the resource and of its string table.
const LANG_EN_US: u16 = 0x0409;
/// Code page 1200 (UTF-16LE), the charset of the string table.
const CP_UTF16: u16 = 0x04B0;
/// High bit of an IMAGE_RESOURCE_DIRECTORY_ENTRY's offset: the entry points
/// at another directory rather than at a data entry.
const SUBDIRECTORY: u32 = 0x8000_0000;

/// `wType` of a version-info node whose value is text (also what resource
/// compilers put on the value-less StringFileInfo, StringTable and
/// VarFileInfo blocks).
const TEXT: u16 = 1;
/// `wType` of a version-info node whose value is binary data.
const BINARY: u16 = 0;

/// A minimal, valid Windows PE32+ image whose VS_VERSIONINFO resource carries
/// `ProductVersion` = `version` (and FileVersion the same), so that
/// `kanade_shared::exe_version::extract_pe_version(&bytes) == Some(version)`.
///
/// Pass the bytes to pelite as (a slice of) this `Vec`: pelite refuses images
/// whose start is not 4-aligned, which a heap allocation always is but a slice
/// at an arbitrary offset into some other buffer may not be.
#[allow(dead_code)]
pub fn windows_exe_with_version(version: &str) -> Vec<u8> {
    let rsrc = resource_section(version);
    let virtual_size = len_u32(rsrc.len());
    // pelite bounds-checks the whole raw range against the file, so the file
    // really carries the padding up to SizeOfRawData.
    let raw_size = virtual_size.next_multiple_of(FILE_ALIGNMENT);
    let size_of_image = RSRC_RVA + virtual_size.next_multiple_of(SECTION_ALIGNMENT);

    let mut pe = Vec::with_capacity(to_usize(SIZE_OF_HEADERS + raw_size));

    // IMAGE_DOS_HEADER: only e_magic and e_lfanew (at 0x3C) matter to anything
    // but MS-DOS; the rest of the 64 bytes stays zero.
    pe.extend_from_slice(b"MZ");
    pe.resize(0x3C, 0);
    put_u32(&mut pe, E_LFANEW);
    assert_eq!(pe.len(), to_usize(E_LFANEW));

    // IMAGE_NT_HEADERS64.Signature.
    pe.extend_from_slice(b"PE\0\0");

    // IMAGE_FILE_HEADER.
    put_u16(&mut pe, 0x8664); // Machine: IMAGE_FILE_MACHINE_AMD64
    put_u16(&mut pe, 1); // NumberOfSections: .rsrc only
    put_u32(&mut pe, 0); // TimeDateStamp
    put_u32(&mut pe, 0); // PointerToSymbolTable: no COFF symbols
    put_u32(&mut pe, 0); // NumberOfSymbols
    put_u16(&mut pe, SIZE_OF_OPTIONAL_HEADER);
    // Characteristics: IMAGE_FILE_EXECUTABLE_IMAGE | IMAGE_FILE_LARGE_ADDRESS_AWARE.
    put_u16(&mut pe, 0x0022);

    // IMAGE_OPTIONAL_HEADER64.
    let optional_header_start = pe.len();
    put_u16(&mut pe, 0x020B); // Magic: PE32+, what pe64::PeFile insists on
    pe.extend_from_slice(&[14, 0]); // Major/MinorLinkerVersion: MSVC 14.0
    put_u32(&mut pe, 0); // SizeOfCode: no code section
    put_u32(&mut pe, raw_size); // SizeOfInitializedData: the .rsrc section
    put_u32(&mut pe, 0); // SizeOfUninitializedData
    put_u32(&mut pe, 0); // AddressOfEntryPoint: never run
    put_u32(&mut pe, 0); // BaseOfCode
    put_u64(&mut pe, 0x1_4000_0000); // ImageBase: the x64 EXE default
    put_u32(&mut pe, SECTION_ALIGNMENT);
    put_u32(&mut pe, FILE_ALIGNMENT);
    put_u16(&mut pe, 6); // MajorOperatingSystemVersion: Windows Vista+
    put_u16(&mut pe, 0); // MinorOperatingSystemVersion
    put_u16(&mut pe, 0); // MajorImageVersion
    put_u16(&mut pe, 0); // MinorImageVersion
    put_u16(&mut pe, 6); // MajorSubsystemVersion
    put_u16(&mut pe, 0); // MinorSubsystemVersion
    put_u32(&mut pe, 0); // Win32VersionValue: reserved, must be zero

    // pelite requires SizeOfHeaders <= SizeOfImage and SizeOfHeaders <= the
    // file length.
    put_u32(&mut pe, size_of_image);
    put_u32(&mut pe, SIZE_OF_HEADERS);
    put_u32(&mut pe, 0); // CheckSum: only checked for drivers
    put_u16(&mut pe, 3); // Subsystem: IMAGE_SUBSYSTEM_WINDOWS_CUI (console)
    put_u16(&mut pe, 0); // DllCharacteristics: no loader hints needed
    put_u64(&mut pe, 0x10_0000); // SizeOfStackReserve: 1 MiB, the default
    put_u64(&mut pe, 0x1000); // SizeOfStackCommit
    put_u64(&mut pe, 0x10_0000); // SizeOfHeapReserve
    put_u64(&mut pe, 0x1000); // SizeOfHeapCommit
    put_u32(&mut pe, 0); // LoaderFlags: reserved, must be zero
    put_u32(&mut pe, 16); // NumberOfRvaAndSizes: the full table

    // IMAGE_DATA_DIRECTORY[16]: only the resource table is present. Its Size
    // bounds everything pelite reads from the resources, the version blob at
    // the end included.
    for index in 0..16 {
        if index == IMAGE_DIRECTORY_ENTRY_RESOURCE {
            put_u32(&mut pe, RSRC_RVA);
            put_u32(&mut pe, virtual_size);
        } else {
            put_u32(&mut pe, 0);
            put_u32(&mut pe, 0);
        }
    }
    assert_eq!(
        pe.len() - optional_header_start,
        usize::from(SIZE_OF_OPTIONAL_HEADER)
    );

    // IMAGE_SECTION_HEADER for .rsrc.
    pe.extend_from_slice(b".rsrc\0\0\0"); // Name: 8 bytes, NUL-padded
    put_u32(&mut pe, virtual_size); // VirtualSize: the unpadded contents
    put_u32(&mut pe, RSRC_RVA); // VirtualAddress
    put_u32(&mut pe, raw_size); // SizeOfRawData: a multiple of FileAlignment
    put_u32(&mut pe, SIZE_OF_HEADERS); // PointerToRawData: right after the headers
    put_u32(&mut pe, 0); // PointerToRelocations
    put_u32(&mut pe, 0); // PointerToLinenumbers
    put_u16(&mut pe, 0); // NumberOfRelocations
    put_u16(&mut pe, 0); // NumberOfLinenumbers

    // Characteristics: IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ.
    put_u32(&mut pe, 0x4000_0040);

    // The section's raw data, at SizeOfHeaders and padded to SizeOfRawData.
    pe.resize(to_usize(SIZE_OF_HEADERS), 0);
    pe.extend_from_slice(&rsrc);
    pe.resize(to_usize(SIZE_OF_HEADERS + raw_size), 0);
    pe
}

/// The contents of the `.rsrc` section: a three-level resource directory
/// (type / name / language, one entry each) leading to the version info.
///
/// Offsets inside the tree are relative to the start of the section, except
/// the data entry's OffsetToData, which is an RVA. pelite checks every
/// directory and data entry is 4-aligned within the section.
fn resource_section(version: &str) -> Vec<u8> {
    // Each level: a 16-byte IMAGE_RESOURCE_DIRECTORY plus one 8-byte entry.
    const LEVEL_LEN: u32 = 16 + 8;
    const NAME_DIRECTORY: u32 = LEVEL_LEN;
    const LANGUAGE_DIRECTORY: u32 = 2 * LEVEL_LEN;
    const DATA_ENTRY: u32 = 3 * LEVEL_LEN;
    // After the 16-byte IMAGE_RESOURCE_DATA_ENTRY; 4-aligned, as pelite
    // requires of the version info.
    const VERSION_INFO: u32 = DATA_ENTRY + 16;

    let version_info = version_info(version);
    let mut rsrc = Vec::new();
    resource_directory(&mut rsrc, RT_VERSION, SUBDIRECTORY | NAME_DIRECTORY);
    resource_directory(
        &mut rsrc,
        VS_VERSION_INFO_ID,
        SUBDIRECTORY | LANGUAGE_DIRECTORY,
    );
    resource_directory(&mut rsrc, u32::from(LANG_EN_US), DATA_ENTRY);
    assert_eq!(rsrc.len(), to_usize(DATA_ENTRY));

    // IMAGE_RESOURCE_DATA_ENTRY.
    put_u32(&mut rsrc, RSRC_RVA + VERSION_INFO); // OffsetToData: an RVA
    put_u32(&mut rsrc, len_u32(version_info.len())); // Size
    put_u32(&mut rsrc, 0); // CodePage: conventionally 0
    put_u32(&mut rsrc, 0); // Reserved
    assert_eq!(rsrc.len(), to_usize(VERSION_INFO));

    rsrc.extend_from_slice(&version_info);
    rsrc
}

/// An IMAGE_RESOURCE_DIRECTORY with a single id-named entry.
fn resource_directory(out: &mut Vec<u8>, id: u32, offset: u32) {
    put_u32(out, 0); // Characteristics
    put_u32(out, 0); // TimeDateStamp
    put_u16(out, 0); // MajorVersion
    put_u16(out, 0); // MinorVersion
    put_u16(out, 0); // NumberOfNamedEntries
    put_u16(out, 1); // NumberOfIdEntries

    // IMAGE_RESOURCE_DIRECTORY_ENTRY: an integer id (high bit clear) and the
    // section-relative offset of the subdirectory or data entry.
    put_u32(out, id);
    put_u32(out, offset);
}

/// The VS_VERSIONINFO resource.
///
/// pelite's parser is strict about the value lengths: `wValueLength` counts
/// bytes on VS_VERSIONINFO and on a Var, UTF-16 words (NUL included) on a
/// String, and must be zero on StringFileInfo, StringTable and VarFileInfo.
/// `translation()` reads VarFileInfo\Translation, and `value()` only looks in
/// string tables whose key names a listed language, so both are needed.
fn version_info(version: &str) -> Vec<u8> {
    let [major, minor, patch, build] = numeric_version(version);
    let mut fixed = Vec::with_capacity(52);
    for dword in [
        0xFEEF_04BD,           // dwSignature
        0x0001_0000,           // dwStrucVersion: 1.0
        (major << 16) | minor, // dwFileVersionMS
        (patch << 16) | build, // dwFileVersionLS
        (major << 16) | minor, // dwProductVersionMS
        (patch << 16) | build, // dwProductVersionLS
        0x3F,                  // dwFileFlagsMask: VS_FFI_FILEFLAGSMASK
        0,                     // dwFileFlags
        0x0004_0004,           // dwFileOS: VOS_NT_WINDOWS32
        1,                     // dwFileType: VFT_APP
        0,                     // dwFileSubtype
        0,                     // dwFileDateMS
        0,                     // dwFileDateLS
    ] {
        put_u32(&mut fixed, dword);
    }
    // pelite only recognises the fixed info when the value is exactly
    // sizeof(VS_FIXEDFILEINFO).
    assert_eq!(fixed.len(), 52);

    let version_text = utf16z(version);
    let string = |key: &str| node(key, word_count(&version_text), TEXT, &version_text, &[]);
    let string_table = node(
        &format!("{LANG_EN_US:04X}{CP_UTF16:04X}"),
        0,
        TEXT,
        &[],
        &[string("ProductVersion"), string("FileVersion")],
    );
    let string_file_info = node("StringFileInfo", 0, TEXT, &[], &[string_table]);

    let mut translation = Vec::new();
    put_u16(&mut translation, LANG_EN_US);
    put_u16(&mut translation, CP_UTF16);
    let var = node(
        "Translation",
        byte_count(&translation),
        BINARY,
        &translation,
        &[],
    );
    let var_file_info = node("VarFileInfo", 0, TEXT, &[], &[var]);

    node(
        "VS_VERSION_INFO",
        byte_count(&fixed),
        BINARY,
        &fixed,
        &[string_file_info, var_file_info],
    )
}

/// One node of the version-info tree:
///
/// ```text
/// WORD  wLength;       // bytes, from here to the end of the last child
/// WORD  wValueLength;  // meaning depends on the node, see `version_info`
/// WORD  wType;         // TEXT or BINARY
/// WCHAR szKey[];       // NUL-terminated UTF-16LE
/// WORD  Padding1[];    // to a 32-bit boundary
/// BYTE  Value[];
/// WORD  Padding2[];    // to a 32-bit boundary, before each child
/// ...   Children[];
/// ```
///
/// Offsets are relative to the node's start, which callers keep 4-aligned (the
/// blob starts 4-aligned and every child is padded to 4 before it), so
/// aligning within the node aligns in the file. `wLength` includes the padding
/// between children but not after the last one, as resource compilers write
/// it; pelite aligns past it when stepping to the next sibling.
fn node(key: &str, value_length: u16, kind: u16, value: &[u8], children: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u16(&mut out, 0); // wLength, patched below
    put_u16(&mut out, value_length);
    put_u16(&mut out, kind);
    out.extend_from_slice(&utf16z(key));
    pad_to_dword(&mut out);
    out.extend_from_slice(value);
    for child in children {
        pad_to_dword(&mut out);
        out.extend_from_slice(child);
    }
    let length = u16::try_from(out.len()).expect("a version-info node fits in 64 KiB");
    out[..2].copy_from_slice(&length.to_le_bytes());
    out
}

/// The first four dot-separated numbers of `version`, each cut at its first
/// non-digit ("1.2.3-rc.1" gives 1, 2, 3, 1), for VS_FIXEDFILEINFO. Only the
/// strings matter to the version probe; this just keeps the two consistent.
fn numeric_version(version: &str) -> [u32; 4] {
    let mut numbers = [0; 4];
    for (number, part) in numbers.iter_mut().zip(version.split('.')) {
        let digits = part
            .find(|c: char| !c.is_ascii_digit())
            .map_or(part, |end| &part[..end]);
        *number = digits.parse::<u16>().map_or(0, u32::from);
    }
    numbers
}

/// `text` as NUL-terminated UTF-16LE.
fn utf16z(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// A byte-measured `wValueLength`.
fn byte_count(value: &[u8]) -> u16 {
    u16::try_from(value.len()).expect("a version-info value fits in 64 KiB")
}

/// A word-measured `wValueLength` (text values).
fn word_count(value: &[u8]) -> u16 {
    byte_count(value) / 2
}

fn pad_to_dword(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("the test image stays far below 4 GiB")
}

fn to_usize(value: u32) -> usize {
    usize::try_from(value).expect("usize holds u32 on supported targets")
}
