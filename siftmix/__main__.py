from siftmix.pipeline.cli import main

main()
