from slipway.cli.main import run

run()
