# Two commands do everything: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

OPEN_CLIP_VENV ?= .venv-open-clip

.PHONY: install demo tour test test-open-clip bench toy-clip toy-clip-base clean

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

install: $(VENV)/.installed

# The Gradio explorer on the toy CLIP, at http://127.0.0.1:7860 (Ctrl+C stops it).
demo: install
	$(VENV)/bin/sith-lens demo

# The command-line tour: summary, sample scenes, SITH report, an edited checkpoint.
tour: install
	$(VENV)/bin/sith-lens info --model toy
	$(VENV)/bin/sith-lens toyworld --n 16 --out toyworld.png
	$(VENV)/bin/sith-lens explain --model toy --out sith-out
	$(VENV)/bin/sith-lens edit --model toy --suppress red --result sith-out/sith.json --out sith-out/no-red-clip

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: install
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# OpenCLIP parity tests, in their own environment: open_clip needs torchvision, which brings a
# CUDA build of torch (about 5.5 GB). SITH_LENS_REQUIRE_OPEN_CLIP=1 makes a missing open_clip fail.
$(OPEN_CLIP_VENV)/.installed: pyproject.toml scripts/install.sh
	TORCH_SPEC=none bash scripts/install.sh $(OPEN_CLIP_VENV) dev,open-clip
	touch $@

test-open-clip: $(OPEN_CLIP_VENV)/.installed
	SITH_LENS_REQUIRE_OPEN_CLIP=1 $(OPEN_CLIP_VENV)/bin/python -m pytest -q tests/test_open_clip.py

bench: install
	$(PY) benchmarks/hooked_forward.py
	$(PY) benchmarks/toy_clip_quality.py
	$(PY) benchmarks/comp_speed.py
	$(PY) benchmarks/sith_toy.py
	$(PY) benchmarks/sith_pipeline.py
	$(PY) benchmarks/edit_toy.py
	$(PY) benchmarks/compare_toy.py
	$(PY) benchmarks/demo_load.py

# The shipped toy CLIP, rebuilt in its two seeded stages. toy-clip-base trains checkpoint 3 from
# scratch (CLS loss only; 47.6 min on a 2-core CPU with fast bf16 autocast, add BF16=--no-bf16 on
# one without AVX-512 BF16); toy-clip fine-tunes it for 400 steps with the three label-free
# token-level losses (9.8 min on 2 cores) into sith_lens/assets/toy_clip.
BF16 ?=
toy-clip-base: install
	$(PY) -m recipes.toy_clip --out checkpoints/toy_clip_3 --steps 1500 --seed 0 --threads 2 \
		--prompt-share 0.7 --prompt-weights shape=6,texture=2,size=1,position=1,color=0.5,background=0.5 $(BF16)

toy-clip: install
	$(PY) -m recipes.toy_clip --out sith_lens/assets/toy_clip --init-from checkpoints/toy_clip_3 \
		--steps 400 --batch-size 128 --lr 3e-4 --warmup 20 --prompt-share 0.5 --token-loss 1 --crop-loss 4 \
		--word-loss 1 --token-start 0 --token-warmup 0 --no-bf16 --eval-every 100

clean:
	rm -rf $(VENV) $(OPEN_CLIP_VENV) build *.egg-info
