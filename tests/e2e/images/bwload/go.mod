module nri-bandwidth.test/bwload

go 1.22
