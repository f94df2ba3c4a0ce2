"""Names memtune writes into files for other tools (.vmx, PowerShell, libvirt XML, shell scripts).

A name every export target can hold: not empty, at most 80 characters, no control, invisible-format
or line-break character. Scenarios, policies and imports refuse other names when they are read.
"""

from __future__ import annotations

import unicodedata

# vSphere: "The name of a virtual machine can contain up to 80 characters" (vSphere Virtual Machine
# Administration, "Create a Virtual Machine"); the other targets (.vmx, libvirt, cgroup v2) allow longer.
NAME_MAX_CHARS = 80
# Unicode categories no exported file may carry in a name: control (Cc), invisible format such as
# bidi overrides (Cf), surrogates (Cs), private use (Co), unassigned (Cn), line/paragraph separators.
UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a VM (or policy, scenario) name every export target holds, or None."""
    if not isinstance(name, str):
        return f"expected text, got {name!r}"
    if not name.strip():
        return "a name must not be empty or blank"
    if len(name) > NAME_MAX_CHARS:
        return f"a name may have at most {NAME_MAX_CHARS} characters (vSphere's limit), got {len(name)}"
    for ch in name:
        if unicodedata.category(ch) in UNSAFE_CATEGORIES:
            return (f"{name!r} contains {ch!r} (U+{ord(ch):04X}): control, invisible or line-break "
                    "characters cannot be written to .vmx, PowerShell, XML or shell files")
    return None


def one_line(text: str) -> str:
    """``text`` safe inside a one-line comment: characters of the unsafe categories as ``\\uXXXX``."""
    return "".join(
        f"\\u{ord(ch):04x}" if unicodedata.category(ch) in UNSAFE_CATEGORIES else ch for ch in text
    )
