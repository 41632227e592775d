"""Tests of sweeper.views."""
