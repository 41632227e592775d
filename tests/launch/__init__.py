"""Tests of sweeper.launch."""
