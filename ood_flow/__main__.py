from ood_flow.cli.main import main

main()
