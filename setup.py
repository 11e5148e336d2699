"""Everything but one file is in pyproject.toml: this adds ``sith_lens-tl3.pth`` to the installed
files (wheel and editable install), so that the interpreter imports sith_lens at start-up (a few
milliseconds: its imports are lazy) and TransformerLens 3's ``boot_transformers`` finds the CLIP
and SigLIP adapters in code that never imports sith_lens; see adapters/bridge.py."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "sith_lens-tl3.pth"


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        for target in self._pth_targets():
            self.copy_file(PTH, str(target), preserve_mode=False)

    def _pth_targets(self) -> list[Path]:
        targets = [Path(self.build_lib, PTH)]
        if getattr(self, "editable_mode", False):
            # an editable wheel ships only what is written into its unpacked root, which is two levels
            # above the data folder setuptools points install_data at (NAME.data/data)
            data_dir = self.get_finalized_command("install_data").install_dir
            targets.append(Path(data_dir).parents[1] / PTH)
        return targets

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib, PTH))]


setup(cmdclass={"build_py": BuildPyWithPth})
