"""JavaScript/TypeScript import edges between the files of one tree.

Resolution follows dependency-cruiser (enhanced-resolve plus its TypeScript retry):
a relative specifier names a file exactly, or with one of the extensions in
dependency-cruiser's order, or a directory's `index.*`; a `.js`/`.jsx` specifier with no
such file names the `.ts`/`.tsx`/`.d.ts` source (`.mjs` -> `.mts`, `.cjs` -> `.cts`, the
TypeScript ESM convention). Bare specifiers go through the nearest tsconfig's `paths`
and `baseUrl`; what still does not resolve is an external package, recorded by name.
Not modelled: package.json `main`/`exports`/`imports` inside the tree, webpack aliases.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection, Mapping

from agents.analysis.js_scan import scan_specifiers
from agents.analysis.model import ScanResult
from agents.analysis.tree import JS_EXTS
from agents.analysis.tsconfig import CONFIG_NAMES, TsConfig, TsConfigError, load_tsconfig

# dependency-cruiser's default resolution order (its "scannable extensions").
EXTENSIONS = (".js", ".cjs", ".mjs", ".jsx", ".ts", ".tsx", ".d.ts", ".cts", ".d.cts",
              ".mts", ".d.mts")
_TS_FOR_JS = {".js": (".ts", ".tsx", ".d.ts"), ".jsx": (".ts", ".tsx", ".d.ts"),
              ".cjs": (".cts", ".d.cts"), ".mjs": (".mts", ".d.mts")}
_PROTOCOL = re.compile(r"^[a-zA-Z][\w+.-]*:")


def is_js(path: str) -> bool:
    return path.endswith(JS_EXTS)


def package_name(specifier: str) -> str:
    """`@scope/pkg/sub` -> `@scope/pkg`, `pkg/sub` -> `pkg`, `node:fs` -> `fs`."""
    specifier = specifier.removeprefix("node:")
    parts = specifier.split("/")
    return "/".join(parts[:2]) if specifier.startswith("@") and len(parts) > 1 else parts[0]


class Resolver:
    """Turns specifiers into tree paths, given every path in the tree."""

    def __init__(self, paths: Collection[str], configs: Mapping[str, str | None]) -> None:
        self.paths = paths if isinstance(paths, set | frozenset) else set(paths)
        self._configs = configs
        self._tsconfig_for_dir: dict[str, TsConfig | None] = {}
        self.config_errors: list[tuple[str, str]] = []

    def file(self, target: str) -> str | None:
        """The file `target` names: exactly, with an extension, or as a directory index."""
        if target in self.paths:
            return target
        for ext in EXTENSIONS:
            if target + ext in self.paths:
                return target + ext
        index = f"{target}/index" if target else "index"
        for ext in EXTENSIONS:
            if index + ext in self.paths:
                return index + ext
        stem, ext = posixpath.splitext(target)
        ts_exts = _TS_FOR_JS.get(ext, ())
        for candidate in [stem + e for e in ts_exts] + [f"{stem}/index{e}" for e in ts_exts]:
            if candidate in self.paths:
                return candidate
        return None

    def tsconfig(self, directory: str) -> TsConfig | None:
        """The nearest `tsconfig.json` (or `jsconfig.json`) at or above `directory`."""
        if directory in self._tsconfig_for_dir:
            return self._tsconfig_for_dir[directory]
        found: TsConfig | None = None
        for name in CONFIG_NAMES:
            path = f"{directory}/{name}" if directory else name
            if path in self._configs:
                try:
                    found = load_tsconfig(path, self._configs.get)
                except TsConfigError as exc:
                    self.config_errors.append((path, str(exc)))
                break
        else:
            if directory:
                found = self.tsconfig(posixpath.dirname(directory))
        self._tsconfig_for_dir[directory] = found
        return found

    def resolve(self, importer: str, specifier: str) -> tuple[str | None, str | None]:
        """(tree path, None) for an internal file, (None, package) for an external one,
        (None, None) when the specifier names nothing we can find."""
        specifier = specifier.split("?", 1)[0]  # bundler queries: './icon.svg?raw'
        directory = posixpath.dirname(importer)
        if specifier.startswith(("./", "../")) or specifier in (".", ".."):
            target = posixpath.normpath(posixpath.join(directory, specifier))
            return self.file("" if target == "." else target), None
        if not specifier or specifier.startswith(("/", "#")):
            return None, None
        if _PROTOCOL.match(specifier) and not specifier.startswith("node:"):
            return None, None
        config = self.tsconfig(directory)
        if config is not None:
            for candidate in config.path_candidates(specifier):
                hit = self.file(candidate)
                if hit is not None:
                    return hit, None
            if config.base_url is not None:
                hit = self.file(posixpath.join(config.base_url, specifier)
                                if config.base_url else specifier)
                if hit is not None:
                    return hit, None
        return None, package_name(specifier)


def scan_js(sources: Mapping[str, str | None], paths: Collection[str],
            configs: Mapping[str, str | None]) -> ScanResult:
    """Scan every JS/TS file with content in `sources` and resolve its specifiers."""
    result = ScanResult()
    resolver = Resolver(paths, configs)
    for path, text in sources.items():
        if text is None or not is_js(path):
            continue
        result.parsed += 1
        for _kind, specifier in scan_specifiers(text):
            target, external = resolver.resolve(path, specifier)
            if target is not None:
                result.edges.add((path, target))
            elif external is not None:
                result.add_external(path, external)
            else:
                result.unresolved += 1
    for path, message in resolver.config_errors:
        result.error(path, f"tsconfig: {message}")
    return result
