# vkbackup developer shortcuts. The test lab (tests/lab) needs root, docker.io and
# debootstrap; state lives in $VKBACKUP_LAB_DIR (default .lab/).
PY ?= .venv/bin/python
SCALE ?=

.PHONY: lab lab-down lab-status lab-reset-fresh lab-reset-prod lab-check-down

lab:  ## bring the lab up (idempotent; SCALE=N for a bigger database and volumes)
	$(PY) -m tests.lab up $(if $(SCALE),--scale $(SCALE))

lab-down:  ## remove the lab's containers, volumes, network, S3 server and state
	$(PY) -m tests.lab down

lab-status:  ## JSON status; exit 0 when everything is up
	$(PY) -m tests.lab status

lab-reset-fresh:  ## recreate the fresh host empty
	$(PY) -m tests.lab reset-fresh

lab-reset-prod:  ## recreate and reseed prod
	$(PY) -m tests.lab reset-prod $(if $(SCALE),--scale $(SCALE))

lab-check-down:  ## after lab-down: fail if anything was left behind
	$(PY) -m tests.lab check-down
