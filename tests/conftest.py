"""Shared fixtures. ``local_stack`` starts a real moto server + local Firehose service (separate
processes, own state folder) once per test session and points boto3 at it."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from kinesis_lab import stack

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"


@pytest.fixture(scope="session")
def local_stack_dir(tmp_path_factory):
    """The state folder of the session's local stack."""
    return tmp_path_factory.mktemp("lab-state")


@pytest.fixture(scope="session")
def local_stack(local_stack_dir):
    """A running local stack: yields its StackState; boto3 in this process reaches it."""
    state_dir = local_stack_dir
    state, _ = stack.up(state_dir, REGION)
    saved = {k: os.environ.get(k) for k in stack.local_env(state.endpoint, REGION)}
    os.environ.update(stack.local_env(state.endpoint, REGION))
    try:
        yield state
    finally:
        stack.down(state_dir)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def clean_stack(local_stack):
    """The session's stack with every AWS resource wiped before the test."""
    stack.reset(local_stack.endpoint)
    return local_stack


@pytest.fixture
def aws_clients(clean_stack):
    def client(name: str):
        return boto3.client(name, region_name=REGION)

    return client
