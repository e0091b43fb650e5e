from batchgpt.cli import main

main()
