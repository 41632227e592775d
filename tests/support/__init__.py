"""What the tests share: test servers, study builders, workers stopped mid-trial."""
